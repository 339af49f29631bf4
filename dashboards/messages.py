"""What a panel says when it cannot be drawn: one message, for every panel of the page."""

from __future__ import annotations

import streamlit as st

from dashboards import view
from dashboards.database import DashboardError


def problem_message(problem: DashboardError) -> None:
    st.warning(f"This panel cannot be shown: {view.plain(str(problem))}")
