"""dashboards.charts: DataFrame in, Vega-Lite spec out. Pure: no database."""

from __future__ import annotations

import pandas as pd

from dashboards import charts
from dashboards.queries import ANONYMOUS, BOTS, REGISTERED


def timeline_frame() -> pd.DataFrame:
    times = pd.date_range("2026-06-20 12:00", periods=3, freq="1min", tz="UTC", name="time")
    return pd.DataFrame(
        {"time": times, BOTS: [1.0, 2.0, 0.0], REGISTERED: [5.0, 4.0, 3.0], ANONYMOUS: [0, 1, 2]}
    )


def test_timeline_stacks_the_three_kinds_of_editors() -> None:
    spec = charts.timeline_chart(timeline_frame()).to_dict()
    assert spec["mark"]["type"] == "area"
    assert spec["encoding"]["y"]["stack"] == "zero"
    assert spec["encoding"]["x"]["scale"]["type"] == "utc"
    assert spec["encoding"]["color"]["scale"]["domain"] == [BOTS, REGISTERED, ANONYMOUS]
    [values] = spec["datasets"].values()
    assert len(values) == 9 and {row["editors"] for row in values} == {BOTS, REGISTERED, ANONYMOUS}


def test_timeline_without_bots() -> None:
    spec = charts.timeline_chart(timeline_frame(), include_bots=False, per="hour").to_dict()
    assert spec["encoding"]["color"]["scale"]["domain"] == [REGISTERED, ANONYMOUS]
    assert spec["encoding"]["x"]["axis"]["format"] == "%b %d %H:%M"
    [values] = spec["datasets"].values()
    assert BOTS not in {row["editors"] for row in values}


def test_top_wikis_and_user_history() -> None:
    wikis = pd.DataFrame(
        {"wiki": ["enwiki", "dewiki"], "edits": [10, 5], "new_pages": [1, 0], "bytes_added": [5, 1]}
    )
    spec = charts.top_wikis_chart(wikis).to_dict()
    assert spec["mark"]["type"] == "bar" and spec["encoding"]["y"]["sort"] == "-x"
    history = pd.DataFrame({"time": timeline_frame()["time"], "edits": [1, 0, 3]})
    spec = charts.user_history_chart(history, per="hour").to_dict()
    assert spec["encoding"]["y"]["title"] == "edits per hour"
    assert charts.timeline_chart(timeline_frame().iloc[:0]).to_dict()["mark"]["type"] == "area"
