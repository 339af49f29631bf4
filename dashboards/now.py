"""The "Now" view: what is happening on the wikis at the newest minute aggregated (event time,
so a replay shows what the live run showed). Panels as functions, each drawn inside a fragment
of the page (dashboards/wikipulse_dashboard.py)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import cache, view
from dashboards.messages import problem_message
from dashboards.queries import DashboardError


def trending_panel(wikis: tuple[str, ...]) -> None:
    """The pages trending now (migration 0006's ``trending_pages()``), each linked to itself on
    its wiki, with its edits per minute over the last hour."""
    st.subheader("Trending now")
    try:
        trending = cache.trending_pages(wikis)
    except DashboardError as problem:
        problem_message(problem)
        return
    at = trending.attrs.get("at")
    knobs = cache.settings().alerts.trending
    horizon, baseline = view.format_duration(knobs.horizon), view.format_duration(knobs.baseline)
    bots = "bots counted" if knobs.with_bots else "bots left out"
    if trending.empty:
        st.info(
            f"No page is trending: none had edits by at least {knobs.min_editors} people "
            f"({bots}) in the last {horizon}"
            + (f" before {at:%Y-%m-%d %H:%M} UTC." if at is not None else ".")
        )
        return
    table = pd.DataFrame(
        {
            "page": [
                view.linked_page(server, title)
                for server, title in zip(trending["server_name"], trending["title"], strict=True)
            ],
            "wiki": trending["wiki"],
            "edits": trending["edits"],
            "editors": trending["editors"],
            "last hour": trending["last_hour"],
            "score": trending["score"],
        }
    )
    with st.container(key="trending"):
        st.dataframe(
            table,
            hide_index=True,
            key="trending_pages",
            column_config={
                "page": st.column_config.LinkColumn(
                    "page", display_text=view.LINK_DISPLAY, help="Opens the page on its wiki"
                ),
                "edits": st.column_config.NumberColumn(
                    format="localized", help=f"In the last {horizon}, {bots}"
                ),
                "editors": st.column_config.NumberColumn(
                    help=f"Distinct editors in the last {horizon}, {bots}"
                ),
                "last hour": st.column_config.LineChartColumn(
                    "last hour", y_min=0, help="Edits per minute over the last hour"
                ),
                "score": st.column_config.NumberColumn(
                    format="%.1f",
                    help="editors × (edits + 1) / (expected + 1), the expected edits from the "
                    f"page's own {baseline} before (alembic/README.md, trending_pages())",
                ),
            },
        )
    st.caption(
        f"The last {horizon} before {at:%H:%M} UTC (the newest minute aggregated), against "
        f"each page's own {baseline} before."
    )
