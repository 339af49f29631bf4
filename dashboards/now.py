"""The "Now" view: what is happening on the wikis at the newest minute aggregated (event time,
so a replay shows what the live run showed). Panels as functions, each drawn inside a fragment
of the page (dashboards/wikipulse_dashboard.py)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import cache, view
from dashboards.database import DashboardError
from dashboards.messages import problem_message
from dashboards.view import Span

#: What the alerts panel lists (the URL's ``?alerts=``): the open ones only, or with the
#: episodes of the selected range.
ALERTS_OPEN, ALERTS_IN_RANGE = "open", "in range"
ALERT_VIEWS = (ALERTS_OPEN, ALERTS_IN_RANGE)
KIND_LABELS = {"wiki_surge": "surge", "wiki_drop": "drop", "page_trending": "trending"}


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


def alerts_panel(span: Span, wikis: tuple[str, ...], shown: str) -> None:
    """The alerts open now (migration 0007), and with ``shown`` = :data:`ALERTS_IN_RANGE` the
    episodes of the range too: each wiki's surges and drops, the pages trending."""
    st.subheader("Alerts")
    try:
        alerts = cache.alerts(span, wikis)
    except DashboardError as problem:
        problem_message(problem)
        return
    if shown == ALERTS_OPEN:
        alerts = alerts[alerts["open"]]
    if alerts.empty:
        where = "" if shown == ALERTS_OPEN else f", and none in {view.describe_span(span)}"
        st.info(f"No alert is open{where}.")
        return
    table = pd.DataFrame(
        {
            "alert": [KIND_LABELS[kind] for kind in alerts["kind"]],
            "wiki": alerts["wiki"],
            "page": [
                None if title is None else view.linked_page(str(server), str(title))
                for server, title in zip(alerts["server_name"], alerts["title"], strict=True)
            ],
            "since": [f"{start:%Y-%m-%d %H:%M}" for start in alerts["window_start"]],
            "until": [
                "open" if is_open else f"{end:%Y-%m-%d %H:%M}"
                for is_open, end in zip(alerts["open"], alerts["window_end"], strict=True)
            ],
            "observed": alerts["observed"],
            "usual": alerts["expected"],
            "score": alerts["score"],
        }
    )
    with st.container(key="alerts_panel"):
        st.dataframe(
            table,
            hide_index=True,
            key="alerts_table",
            column_config={
                "page": st.column_config.LinkColumn(
                    "page", display_text=view.LINK_DISPLAY, help="Opens the page on its wiki"
                ),
                "since": st.column_config.TextColumn(
                    "since (UTC)", help="The episode's first minute (event time)"
                ),
                "until": st.column_config.TextColumn(
                    "until (UTC)", help="The end of its last minute, or open while it lasts"
                ),
                "observed": st.column_config.NumberColumn(
                    format="%.0f",
                    help="Wikis: edits in the episode's newest minute; pages: edits over the "
                    "trending horizon",
                ),
                "usual": st.column_config.NumberColumn(
                    format="%.1f",
                    help="Wikis: the median edits per minute before the episode; pages: the "
                    "edits their own past predicts",
                ),
                "score": st.column_config.NumberColumn(
                    format="%.1f",
                    help="Wikis: robust deviations from the median; pages: the trending score",
                ),
            },
        )
    st.caption(
        "Surges and drops against each wiki's own last hour, pages against their own last day "
        "(spark/README.md, Alerts); the timeline above marks the wikis' episodes."
    )
