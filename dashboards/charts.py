"""DataFrame -> Altair chart. Pure: no Streamlit, no database.

Times are shown in UTC, like every time on the page.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboards.queries import ANONYMOUS, BOTS, REGISTERED, SERIES

#: One color per kind of editor, the same in every chart.
SERIES_COLORS = {BOTS: "#9aa0a6", REGISTERED: "#1f77b4", ANONYMOUS: "#ff7f0e"}

_UTC = alt.Scale(type="utc")


def _time_axis(per: str) -> alt.X:
    """Times in UTC: hours and minutes for per-minute data, days and hours for hourly data."""
    label = "%H:%M" if per == "minute" else "%b %d %H:%M"
    return alt.X("time:T", title=None, scale=_UTC, axis=alt.Axis(format=label, labelOverlap=True))


def timeline_chart(
    frame: pd.DataFrame, *, include_bots: bool = True, per: str = "minute"
) -> alt.Chart:
    """Stacked areas of edits per minute by kind of editor (bots at the bottom).

    ``frame``: ``time`` and one column per series of :data:`SERIES` (what
    :func:`dashboards.queries.timeline` returns), one row per minute or, ``per="hour"``, per
    hour. ``include_bots=False`` leaves the bots out.
    """
    series = [name for name in SERIES if include_bots or name != BOTS]
    long = frame.melt(id_vars="time", value_vars=series, var_name="editors", value_name="rate")
    long["stack_order"] = long["editors"].map({name: i for i, name in enumerate(series)})
    chart: alt.Chart = (
        alt.Chart(long)
        .mark_area(interpolate="step-after", opacity=0.85)
        .encode(
            x=_time_axis(per),
            y=alt.Y("rate:Q", stack="zero", title="edits per minute"),
            color=alt.Color(
                "editors:N",
                scale=alt.Scale(domain=series, range=[SERIES_COLORS[name] for name in series]),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            order=alt.Order("stack_order:Q"),
            tooltip=[
                alt.Tooltip("time:T", title="time (UTC)", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("editors:N"),
                alt.Tooltip("rate:Q", title="edits per minute", format=",.1f"),
            ],
        )
        .properties(height=280)
    )
    return chart


def top_wikis_chart(frame: pd.DataFrame) -> alt.Chart:
    """Horizontal bars: edits per wiki, the busiest on top.

    ``frame``: ``wiki``, ``edits``, ``new_pages``, ``bytes_added`` (:func:`top_wikis`).
    """
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar(color=SERIES_COLORS[REGISTERED])
        .encode(
            y=alt.Y("wiki:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False)),
            x=alt.X("edits:Q", title="edits"),
            tooltip=[
                alt.Tooltip("wiki:N"),
                alt.Tooltip("edits:Q", format=","),
                alt.Tooltip("new_pages:Q", title="new pages", format=","),
                alt.Tooltip("bytes_added:Q", title="bytes added", format=","),
            ],
        )
        .properties(height=max(120, 22 * len(frame)))
    )
    return chart


def user_history_chart(frame: pd.DataFrame, *, per: str = "minute") -> alt.Chart:
    """Bars: one user's edits per minute (or per hour, ``per="hour"``).

    ``frame``: ``time``, ``edits`` (:func:`dashboards.queries.user_history`).
    """
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar(color=SERIES_COLORS[REGISTERED])
        .encode(
            x=_time_axis(per),
            y=alt.Y("edits:Q", title=f"edits per {per}"),
            tooltip=[
                alt.Tooltip("time:T", title="time (UTC)", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("edits:Q", format=","),
            ],
        )
        .properties(height=200)
    )
    return chart
