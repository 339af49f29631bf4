"""The page as AppTest runs it, against a real PostgreSQL migrated by Alembic and seeded with the
known rows of :mod:`tests.dashboards.seed` (read at the frozen clock ``seed.NOW``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import unquote

import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from app.config import Settings
from infra.dashboard import APP_FILE
from infra.processes import free_port
from infra.stack import Stack
from tests.dashboards import seed
from tests.dashboards.conftest import execute, scratch_database

pytestmark = pytest.mark.integration

ALL_EDITS_LAST_HOUR = 32  # 10 + 5 + 8 + 3 + 6, every wiki


def run(**query: str | list[str]) -> AppTest:
    page = AppTest.from_file(str(APP_FILE), default_timeout=60)
    for name, value in query.items():
        page.query_params[name] = value
    page.run()
    assert not page.exception, page.exception
    return page


def metrics(page: AppTest) -> dict[str, tuple[str, str | None]]:
    return {metric.label: (metric.value, metric.delta or None) for metric in page.metric}


def table(page: AppTest, column: str) -> pd.DataFrame:
    """The table whose first column is ``column`` (user, wiki, page)."""
    [frame] = [d.value for d in page.dataframe if d.value.columns[0] == column]
    return frame


def contributors(page: AppTest) -> list[tuple[str, int]]:
    frame = table(page, "user")
    names = [unquote(str(link).split("#", 1)[1]) for link in frame["user"]]
    return list(zip(names, frame["edits"].astype(int), strict=True))


def texts(elements: object) -> str:
    return "\n".join(str(element.value) for element in elements)  # type: ignore[attr-defined]


@pytest.fixture
def page_env(
    seeded: tuple[Settings, dict[str, str]],
    use_environ: Callable[[dict[str, str]], None],
    frozen_clock: Callable[[datetime], None],
) -> Settings:
    settings, environ = seeded
    use_environ(environ)
    return settings


def test_kpis_and_health_of_the_last_hour(page_env: Settings) -> None:
    page = run()
    shown = metrics(page)
    assert shown["Edits in the last complete minute"] == ("15", "+7 (+87.5%)")
    assert shown["Active editors"] == ("5", "+4 (+400.0%)")
    assert shown["Bot share"] == ("37.5%", "+12.5 pp")
    assert shown["New pages"] == ("2", "+2 (new)")
    assert shown["Bytes added"] == ("1,890", "+1,790 (+1790.0%)")
    # pipeline health
    assert shown["Data freshness"][0] == "up to date"
    assert shown["Last Spark batch"][0] == "#41, 30 s ago"
    assert shown["Batch duration"][0] == "850 ms"
    assert shown["Rows dropped as late"][0] == "3"
    assert shown["Worker"][0] == "unreachable"
    assert not page.error
    # Batch 40's 4 records of an unknown schema version (batch 3's 9 are out of range).
    [warning] = [w.value for w in page.warning if "schema version" in w.value]
    assert warning.startswith("4 typed records of a schema version the Spark job does not read")


def test_tables_of_the_last_hour(page_env: Settings) -> None:
    page = run()
    assert contributors(page) == [
        ("BobBot", 9),
        ("Alice", 8),
        (seed.HOSTILE, 3),
        (seed.RTL, 2),
        ("Zoë", 1),
    ]
    shares = table(page, "user")["share"].round(2).tolist()  # percent
    assert shares == [round(100 * n / ALL_EDITS_LAST_HOUR, 2) for n in (9, 8, 3, 2, 1)]
    assert "Most edits: **BobBot** (9)" in texts(page.get_by_key("top_contributor").markdown)
    wikis = table(page, "wiki")
    assert wikis[["wiki", "edits", "new_pages", "bytes_added"]].values.tolist() == [
        ["enwiki", 18, 1, 800],
        ["frwiki", 6, 1, 1000],
        ["dewiki", 5, 0, 50],
        ["arwiki", 3, 0, 40],
    ]
    charts = page.get("vega_lite_chart")
    assert len(charts) == 2  # the timeline and the top wikis


def test_filters_change_the_numbers(page_env: Settings) -> None:
    page = run()
    page.toggle(key="bots").set_value(False).run()
    assert not page.exception
    shown = metrics(page)
    assert shown["Edits in the last complete minute"] == ("10", "+4 (+66.7%)")
    assert shown["Bot share"] == ("excluded", None)
    assert [name for name, _ in contributors(page)] == ["Alice", seed.HOSTILE, seed.RTL, "Zoë"]
    assert table(page, "wiki")[["wiki", "edits"]].values.tolist() == [
        ["enwiki", 12],
        ["dewiki", 4],
        ["arwiki", 3],
        ["frwiki", 1],
    ]

    page.multiselect(key="wiki").set_value(["enwiki"]).run()
    assert not page.exception
    shown = metrics(page)
    assert shown["Edits in the last complete minute"] == ("6", "+0 (+0.0%)")  # 10-4, 8-2
    assert shown["New pages"] == ("1", "+1 (new)")
    assert shown["Bytes added"] == ("800", "+700 (+700.0%)")
    assert table(page, "wiki")["wiki"].tolist() == ["enwiki"]

    page.segmented_control(key="range").set_value("15m").run()
    assert not page.exception
    # Alice, BobBot, O'Brien; before: the right-to-left name
    assert metrics(page)["Active editors"] == ("3", "+2 (+200.0%)")


def test_the_query_string_selects_the_view(page_env: Settings) -> None:
    page = run(range="all", wiki="enwiki", bots="false")
    assert page.segmented_control(key="range").value == "all"
    assert page.multiselect(key="wiki").value == ["enwiki"]
    assert page.toggle(key="bots").value is False
    shown = metrics(page)
    assert shown["New pages"] == ("3", None)  # everything: no previous period
    assert shown["Active editors"] == ("≈ 7", None)
    assert contributors(page) == [
        ("Carol", 29),
        ("Alice", 8),
        ("Dave", 7),
        (seed.HOSTILE, 3),
        (seed.RTL, 2),
        ("Zoë", 1),
    ]
    assert "2026-06-15 12:00 – 2026-06-20 12:31 UTC" in texts(page.caption)

    page = run(range="custom", **{"from": "2026-06-19", "to": "2026-06-19"})
    assert contributors(page) == [("Carol", 20)]
    assert table(page, "wiki")[["wiki", "edits"]].values.tolist() == [["enwiki", 20]]

    page = run(range="24h")
    assert metrics(page)["Active editors"][0] == "≈ 6"
    assert contributors(page)[0] == ("BobBot", 9)
    assert ("Carol", 9) in contributors(page)


@pytest.mark.parametrize(
    ("name", "edits"),
    [
        (seed.HOSTILE, "3"),
        (seed.RTL, "2"),
        ("  Alice  ", "8"),
        ("%", None),
        ("_", None),
        ("Alice' OR '1'='1", None),
        ("'; DROP TABLE user_edit_counts; --", None),
        ("Alice\u200b", None),  # a zero-width space makes another name
        ("*[evil](javascript:alert(1))*", None),
    ],
)
def test_user_lookup_survives_hostile_input(
    page_env: Settings, name: str, edits: str | None
) -> None:
    typed = run()
    typed.text_input(key="user").set_value(name).run()
    linked = run(user=name)
    for page in (typed, linked):
        assert not page.exception
        shown = metrics(page)
        if edits is None:
            assert "Edits in the range" not in shown
            assert "No edits by" in texts(page.info)
        else:
            assert shown["Edits in the range"][0] == edits
            assert len(page.get("vega_lite_chart")) == 3
    [(count,)] = execute(page_env, "SELECT count(*) FROM user_edit_counts")
    assert count == len(seed.USER_EDITS)


def test_stale_data_shows_a_banner(
    page_env: Settings, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(datetime(2026, 6, 20, 12, 40, 20, tzinfo=seed.NOW.tzinfo))
    page = run()
    assert "Stale data" in texts(page.error)
    assert metrics(page)["Data freshness"][0] == "10 min 20 s old"


def test_an_empty_database_says_so(
    stack: Stack,
    stack_env: dict[str, str],
    use_environ: Callable[[dict[str, str]], None],
    frozen_clock: Callable[[datetime], None],
) -> None:
    with scratch_database(stack, stack_env) as (_, environ):
        use_environ(environ)
        page = run()
    assert "No data yet" in texts(page.info)
    assert not page.error and not page.metric


def test_an_unmigrated_database_says_so(
    stack: Stack, stack_env: dict[str, str], use_environ: Callable[[dict[str, str]], None]
) -> None:
    with scratch_database(stack, stack_env, migrate=False) as (_, environ):
        use_environ(environ)
        page = run()
    assert "The database is not ready" in texts(page.error)
    assert "alembic upgrade head" in texts(page.error)


def test_a_database_that_is_down_says_so(
    stack_env: dict[str, str], use_environ: Callable[[dict[str, str]], None]
) -> None:
    use_environ({**stack_env, "POSTGRES_PORT": str(free_port())})
    page = run()
    assert "The database is not available" in texts(page.error)
    assert "wikipulse up" in texts(page.info)


def test_an_invalid_configuration_says_so(
    stack_env: dict[str, str], use_environ: Callable[[dict[str, str]], None]
) -> None:
    use_environ({**stack_env, "DASHBOARD_REFRESH_INTERVAL": "often"})
    page = run()
    assert "configuration is invalid" in texts(page.error)


def test_the_pages_trending_now_link_to_their_wiki(page_env: Settings) -> None:
    page = run()
    trending = table(page, "page")
    titles = [unquote(str(link).split("#", 1)[1]) for link in trending["page"]]
    assert titles == ["Mont Blanc", "Talk:Tea"]  # bots' and two people's pages left out
    assert [str(link).split("#", 1)[0] for link in trending["page"]] == [
        "https://fr.wikipedia.org/wiki/Mont_Blanc",
        "https://en.wikipedia.org/wiki/Talk:Tea",
    ]
    assert trending[["wiki", "edits", "editors"]].values.tolist() == [
        ["frwiki", 7, 4],
        ["enwiki", 3, 3],
    ]
    assert len(trending["last hour"].iloc[0]) == 60
    assert "before 12:30 UTC" in texts(page.caption)
    # The wiki filter applies here too.
    assert table(run(wiki=["enwiki"]), "page")["wiki"].tolist() == ["enwiki"]


ALERT_COLUMNS = ["alert", "wiki", "since", "until", "observed", "usual", "score"]


def test_the_alerts_open_now_and_those_of_the_range(page_env: Settings) -> None:
    page = run()
    alerts = table(page, "alert")
    # Open first; then the episodes of the last hour (dewiki's drop was yesterday).
    assert alerts[ALERT_COLUMNS].values.tolist() == [
        ["trending", "frwiki", "2026-06-20 12:26", "open", 7.0, 0.0, 32.0],
        ["surge", "enwiki", "2026-06-20 12:05", "2026-06-20 12:08", 40.0, 8.0, 11.3],
    ]
    assert alerts["page"].tolist()[0] == "https://fr.wikipedia.org/wiki/Mont_Blanc#Mont%20Blanc"
    assert pd.isna(alerts["page"].tolist()[1])
    # The range and the wiki filter apply; ?alerts=open keeps the open ones only.
    assert table(run(range="7d"), "alert")["wiki"].tolist() == ["frwiki", "enwiki", "dewiki"]
    assert table(run(wiki=["enwiki"]), "alert")["alert"].tolist() == ["surge"]
    assert table(run(alerts="open"), "alert")["alert"].tolist() == ["trending"]
    page = run(alerts="open", wiki=["enwiki"])
    assert "No alert is open." in texts(page.info)


def test_the_timeline_marks_the_wikis_surges_and_drops(page_env: Settings) -> None:
    def bands(page: AppTest) -> list[dict[str, object]]:
        """The band layer's rows of the timeline (Streamlit sends a chart's data as Arrow)."""
        timeline = page.get("vega_lite_chart")[0].proto
        frames = [convert_arrow_bytes_to_pandas_df(named.data.data) for named in timeline.datasets]
        return [
            {"wiki": row["wiki"], "episode": row["episode"], "start": row["start"].isoformat(),
             "end": row["end"].isoformat()}
            for frame in frames if "episode" in frame.columns
            for row in frame.to_dict("records")
        ]  # fmt: skip

    # The last hour: enwiki's surge, no band for the trending page.
    assert bands(run()) == [{"wiki": "enwiki", "episode": "surge",
                             "start": "2026-06-20T12:05:00+00:00",
                             "end": "2026-06-20T12:08:00+00:00"}]  # fmt: skip
    assert [band["episode"] for band in bands(run(range="7d"))] == ["surge", "drop"]
    assert bands(run(wiki=["arwiki"])) == []
