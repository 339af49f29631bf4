"""DataFrame -> Altair chart. Pure: no Streamlit, no database.

Times are shown in UTC, like every time on the page.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from app.alerts.payload import WIKI_DROP, WIKI_SURGE
from dashboards.queries import ANONYMOUS, BOTS, REGISTERED, SERIES

#: One color per kind of editor, the same in every chart.
SERIES_COLORS = {BOTS: "#9aa0a6", REGISTERED: "#1f77b4", ANONYMOUS: "#ff7f0e"}

#: The surge and drop markers on the timeline.
EPISODE_COLORS = {WIKI_SURGE: "#d62728", WIKI_DROP: "#9467bd"}
EPISODE_LABELS = {WIKI_SURGE: "surge", WIKI_DROP: "drop"}

_UTC = alt.Scale(type="utc")


def _time_axis(per: str) -> alt.X:
    """Times in UTC: hours and minutes for per-minute data, days and hours for hourly data."""
    label = "%H:%M" if per == "minute" else "%b %d %H:%M"
    return alt.X("time:T", title=None, scale=_UTC, axis=alt.Axis(format=label, labelOverlap=True))


def timeline_chart(
    frame: pd.DataFrame,
    *,
    include_bots: bool = True,
    per: str = "minute",
    episodes: pd.DataFrame | None = None,
) -> alt.Chart | alt.LayerChart:
    """Stacked areas of edits per minute by kind of editor (bots at the bottom), and a band
    over each wiki's surge or drop.

    ``frame``: ``time`` and one column per series of :data:`SERIES` (what
    :func:`dashboards.queries.timeline` returns), one row per minute or, ``per="hour"``, per
    hour. ``include_bots=False`` leaves the bots out. ``episodes``: alerts as
    :func:`dashboards.queries.alerts` returns them (pages' are left out).
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
    bands = _episode_bands(episodes)
    if bands is None:
        return chart
    return alt.LayerChart(layer=[bands, chart])


def _episode_bands(episodes: pd.DataFrame | None) -> alt.Chart | None:
    if episodes is None:
        return None
    wiki_episodes = episodes[episodes["kind"].isin(list(EPISODE_COLORS))]
    if wiki_episodes.empty:
        return None
    marks = pd.DataFrame(
        {
            "start": wiki_episodes["window_start"],
            "end": wiki_episodes["window_end"],
            "episode": [EPISODE_LABELS[kind] for kind in wiki_episodes["kind"]],
            "wiki": wiki_episodes["wiki"],
        }
    )
    labels = [EPISODE_LABELS[kind] for kind in EPISODE_COLORS]
    bands: alt.Chart = (
        alt.Chart(marks)
        .mark_rect(opacity=0.18)
        .encode(
            x=alt.X("start:T", scale=_UTC),
            x2="end:T",
            fill=alt.Fill(
                "episode:N",
                scale=alt.Scale(domain=labels, range=list(EPISODE_COLORS.values())),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            tooltip=[
                alt.Tooltip("wiki:N"),
                alt.Tooltip("episode:N"),
                alt.Tooltip("start:T", title="from (UTC)", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("end:T", title="to (UTC)", format="%H:%M"),
            ],
        )
    )
    return bands


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
