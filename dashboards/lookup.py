"""The user lookup: one user's edits over the selected range, the name bound to the URL
(``?user=``). Drawn inside a fragment of the page (dashboards/wikipulse_dashboard.py)."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from dashboards import cache, charts, view
from dashboards.database import DashboardError
from dashboards.messages import problem_message
from dashboards.view import Span


def user_panel(current_span: Callable[[], tuple[Span, bool]]) -> None:
    """``current_span``: the span the filters select now (read inside, at each refresh)."""
    st.subheader("User lookup")
    name = (
        st.text_input(
            "User name",
            key="user",
            bind="query-params",
            placeholder="Exact user name, e.g. InternetArchiveBot",
        )
        or ""
    ).strip()
    if not name:
        return
    try:
        span, _ = current_span()
        history = cache.user_history(span, name)
    except DashboardError as problem:
        problem_message(problem)
        return
    per = view.resolution(span)
    if history.empty:
        st.info(f"No edits by **{view.plain(name)}** in this range.")
        return
    st.metric(
        "Edits in the range",
        view.format_count(int(history["edits"].sum())),
        help=f"Active {len(history):,} {per}s of the range",
    )
    st.altair_chart(
        charts.user_history_chart(history, per=per),
        width="stretch",
        alt=f"Edits per {per} of the user",
        key="user_history",
    )
    st.markdown(
        f"[Contributions of {view.plain(name)} on every wiki]({view.contributions_url(name)})"
    )
