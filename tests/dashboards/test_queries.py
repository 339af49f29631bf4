"""dashboards.queries against a real PostgreSQL: every panel's answer from the rollups equals the
plain query over the base tables (the seed's README queries), for spans of every shape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from app.config import Settings
from dashboards import database, queries, view
from dashboards.view import Span
from infra.stack import Stack
from tests.dashboards import seed
from tests.dashboards.conftest import execute, scratch_database

pytestmark = pytest.mark.integration

START = datetime(2026, 6, 10, tzinfo=UTC)
DAYS = 3


#: Without bots, per-user panels hide names in which "bot" ends a word, in any case
#: (dashboards/README.md): PostgreSQL's case-insensitive match of this pattern.
BOT_NAMES = r"bot\M"


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


#: Spans of every shape: inside an hour, across hour and day boundaries, whole days, everything.
SPANS = [
    Span(at(5) + timedelta(minutes=7), at(5) + timedelta(minutes=52)),
    Span(at(23) + timedelta(minutes=31), at(25) + timedelta(minutes=30)),  # 2 h: exact
    Span(at(22) + timedelta(minutes=10), at(26) + timedelta(minutes=5)),
    Span(at(13) + timedelta(minutes=1), at(61) + timedelta(minutes=59)),
    Span(at(24), at(48)),
    Span(at(0), at(72)),
    Span(at(-5), at(80)),  # beyond the data on both sides
]


@pytest.fixture(scope="module")
def skewed(stack: Stack, stack_env: dict[str, str]) -> Iterator[tuple[Settings, Engine]]:
    """Three days of windows: a few heavy bots and users editing every minute or two, a long
    tail of occasional editors; wikis likewise."""
    with scratch_database(stack, stack_env) as (settings, _):
        execute(
            settings,
            """
            INSERT INTO user_edit_counts (window_start, window_end, user_name, edit_count)
            SELECT ws, ws + interval '1 minute', name, sum(n)
            FROM (
                SELECT %(start)s::timestamptz + make_interval(mins => m) AS ws,
                       CASE WHEN k < 6
                            THEN 'Heavy' || ((hashint8(m::bigint * 100 + k) & 1023) %% 12)
                                 || CASE WHEN k %% 2 = 0 THEN 'Bot' ELSE '' END
                            ELSE 'User ' || ((hashint8(m::bigint * 100 + k) & 1048575) %% 3000)
                       END AS name,
                       1 + (hashint8(m::bigint * 7 + k) & 7) AS n
                FROM generate_series(0, %(minutes)s - 1, 2) AS m, generate_series(0, 13) AS k
            ) AS s
            GROUP BY ws, name
            ORDER BY ws, name
            """,
            {"start": START, "minutes": DAYS * 1440},
        )
        execute(
            settings,
            """
            INSERT INTO wiki_activity (window_start, window_end, wiki, edits, new_pages,
                bot_edits, anonymous_edits, bytes_added, bytes_removed, events)
            SELECT ws, ws + interval '1 minute', wiki, e, e / 4, e / 3, e / 5, e * 100, e * 7,
                   e + 1
            FROM (
                SELECT %(start)s::timestamptz + make_interval(mins => m) AS ws,
                       'wiki' || ((hashint8(m::bigint * 10 + k) & 1023) %% 40) AS wiki,
                       sum(1 + (hashint8(m::bigint * 3 + k) & 15)) AS e
                FROM generate_series(0, %(minutes)s - 1, 3) AS m, generate_series(0, 5) AS k
                GROUP BY 1, 2
            ) AS s
            """,
            {"start": START, "minutes": DAYS * 1440},
        )
        engine = database.make_engine(settings.postgres)
        yield settings, engine
        engine.dispose()


def brute(settings: Settings, statement: str, span: Span, **params: object) -> list[tuple]:
    return execute(settings, statement, {"start": span.start, "end": span.end, **params})


@pytest.mark.parametrize("span", SPANS, ids=str)
@pytest.mark.parametrize("bots", [True, False])
def test_top_contributors_equal_a_group_by(
    skewed: tuple[Settings, Engine], span: Span, bots: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = skewed
    monkeypatch.setattr(queries, "FIRST_DEPTH", 3)  # several rounds of the threshold algorithm
    got = queries.top_contributors(engine, span=span, bots=bots, limit=25)
    expected = brute(
        settings,
        "SELECT user_name, sum(edit_count)::bigint FROM user_edit_counts "
        "WHERE window_start >= %(start)s AND window_start < %(end)s "
        "AND (%(bots)s OR user_name !~* %(pattern)s) "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 25",
        span,
        bots=bots,
        pattern=BOT_NAMES,
    )
    assert list(got.itertuples(index=False, name=None)) == expected


@pytest.mark.parametrize("span", SPANS, ids=str)
def test_wiki_panels_equal_sums_over_the_base_table(
    skewed: tuple[Settings, Engine], span: Span
) -> None:
    settings, engine = skewed
    where = "window_start >= %(start)s AND window_start < %(end)s"
    sums = "sum(edits), sum(bot_edits), sum(anonymous_edits), sum(new_pages), sum(bytes_added), "
    sums += "sum(bytes_removed)"
    [row] = brute(settings, f"SELECT {sums} FROM wiki_activity WHERE {where}", span)
    assert queries.activity(engine, span=span) == queries.Activity(*(int(v or 0) for v in row))
    picked = ("wiki3", "wiki17")
    [row] = brute(
        settings,
        f"SELECT {sums} FROM wiki_activity WHERE {where} AND wiki = ANY(%(wikis)s)",
        span,
        wikis=list(picked),
    )
    assert queries.activity(engine, span=span, wikis=picked) == queries.Activity(
        *(int(v or 0) for v in row)
    )
    top = queries.top_wikis(engine, span=span, limit=10)
    expected = brute(
        settings,
        f"SELECT wiki, sum(edits)::bigint FROM wiki_activity WHERE {where} "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
        span,
    )
    assert list(top[["wiki", "edits"]].itertuples(index=False, name=None)) == expected


@pytest.mark.parametrize("span", SPANS, ids=str)
def test_active_editors(skewed: tuple[Settings, Engine], span: Span) -> None:
    settings, engine = skewed
    [(exact,)] = brute(
        settings,
        "SELECT count(DISTINCT user_name) FROM user_edit_counts "
        "WHERE window_start >= %(start)s AND window_start < %(end)s",
        span,
    )
    editors = queries.active_editors(engine, span=span)
    assert editors.estimated == (span.length > queries.DIRECT_LIMIT)
    if editors.estimated:
        assert abs(editors.count - exact) <= max(2, 0.05 * exact), (editors.count, exact)
    else:
        assert editors.count == exact


def test_timeline_and_user_history(skewed: tuple[Settings, Engine]) -> None:
    settings, engine = skewed
    minutes = Span(at(30) + timedelta(minutes=3), at(31) + timedelta(minutes=3))
    frame = queries.timeline(engine, span=minutes)
    assert len(frame) == 60 and frame["time"].iloc[0] == pd.Timestamp(minutes.start)
    rows = brute(
        settings,
        "SELECT window_start, sum(edits), sum(bot_edits), sum(anonymous_edits) "
        "FROM wiki_activity WHERE window_start >= %(start)s AND window_start < %(end)s "
        "GROUP BY 1",
        minutes,
    )
    by_time = frame.set_index("time")
    for start, edits, bot_edits, anonymous in rows:
        point = by_time.loc[pd.Timestamp(start)]
        assert point[queries.BOTS] == bot_edits
        assert point[queries.ANONYMOUS] == anonymous
        assert point[queries.REGISTERED] == edits - bot_edits - anonymous
    assert frame[list(queries.SERIES)].to_numpy().sum() == sum(r[1] for r in rows)

    hours = Span(at(10) + timedelta(minutes=30), at(40))  # hourly: whole hours touched
    frame = queries.timeline(engine, span=hours, wikis=("wiki3",))
    assert len(frame) == 30 and frame["time"].iloc[0] == pd.Timestamp(at(10))
    [(edits,)] = execute(
        settings,
        "SELECT sum(edits) FROM wiki_activity WHERE wiki = 'wiki3' "
        "AND window_start >= %s AND window_start < %s",
        (at(10), at(40)),
    )
    assert round(frame[list(queries.SERIES)].to_numpy().sum() * 60) == edits

    [(name,)] = execute(settings, "SELECT user_name FROM user_edit_counts LIMIT 1")
    history = queries.user_history(engine, span=hours, user=name)
    [(total,)] = execute(
        settings,
        "SELECT sum(edit_count) FROM user_edit_counts WHERE user_name = %s "
        "AND window_start >= %s AND window_start < %s",
        (name, at(10), at(40)),
    )
    assert history["edits"].sum() == total


def test_the_last_hour_is_the_seeds_top_contributors_hourly(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    """The view uses the database's clock: seed around the real now (minutes away from the
    edges, so a minute turning during the test changes nothing)."""
    now = datetime.now(UTC)
    recent = view.floor(now, "minute")
    rows = [
        (recent - timedelta(minutes=minutes), name, count)
        for minutes, name, count in [
            (1, "Alice", 3), (2, "Alice", 2), (1, "Bob", 4), (5, seed.HOSTILE, 6),
            (20, "Carol", 4), (40, seed.RTL, 1), (59 + 30, "Dave", 50),
        ]
    ]  # fmt: skip
    with scratch_database(stack, stack_env) as (settings, _):
        seed.insert(settings, users=rows, wikis=[], batches=[])
        engine = database.make_engine(settings.postgres)
        try:
            span = view.resolve(view.Filters(range="1h"), now=now, oldest=None)
            assert span is not None
            got = queries.top_contributors(engine, span=span)
        finally:
            engine.dispose()
        expected = execute(settings, "SELECT user_name, total_edits FROM top_contributors_hourly")
    assert list(got.itertuples(index=False, name=None)) == expected
    assert expected[0] == (seed.HOSTILE, 6)


def test_trending_pages_are_scored_in_event_time_with_their_last_hour(
    seeded: tuple[Settings, dict[str, str]],
) -> None:
    settings, _ = seeded
    engine = database.make_engine(settings.postgres)
    try:
        knobs = settings.alerts.trending  # the defaults: 3 editors, bots left out
        trending = queries.trending_pages(engine, knobs)
        only_enwiki = queries.trending_pages(engine, knobs, wikis=["enwiki"])
        # Two editors are enough: القاهرة (2 people, 4 edits, nothing before: 2 × 5 / 1 = 10);
        # with bots: Zugspitze (3 bots, 9 edits: 3 × 10 / 1 = 30).
        two_editors = queries.trending_pages(engine, knobs.model_copy(update={"min_editors": 2}))
        with_bots = queries.trending_pages(engine, knobs.model_copy(update={"with_bots": True}))
        first_row = queries.trending_pages(engine, knobs.model_copy(update={"max_rows": 1}))
    finally:
        engine.dispose()
    # The seed's newest page minute ends at 12:30: the horizon is [12:15, 12:30), the
    # sparkline's hour [11:30, 12:30). Scores worked out by hand in tests/dashboards/seed.py.
    assert trending.attrs["at"] == datetime(2026, 6, 20, 12, 30, tzinfo=UTC)
    assert trending[
        ["wiki", "namespace", "title", "server_name", "edits", "editors"]
    ].values.tolist() == [
        ["frwiki", 0, "Mont Blanc", "fr.wikipedia.org", 7, 4],
        ["enwiki", 1, "Talk:Tea", "en.wikipedia.org", 3, 3],
    ]
    assert trending["score"].tolist() == pytest.approx([32.0, 12 / (1 + 5 * 15 / 1395)])
    assert trending["expected"].tolist() == pytest.approx([0.0, 5 * 15 / 1395])
    mont_blanc = [0] * 60
    mont_blanc[56], mont_blanc[58], mont_blanc[59] = 2, 3, 2  # 12:26, 12:28, 12:29
    assert trending["last_hour"].tolist() == [mont_blanc, [0] * 59 + [3]]
    assert only_enwiki["title"].tolist() == ["Talk:Tea"]
    assert two_editors["title"].tolist() == ["Mont Blanc", "Talk:Tea", "القاهرة"]
    assert two_editors["score"].tolist()[2] == pytest.approx(10.0)
    assert with_bots["title"].tolist() == ["Mont Blanc", "Zugspitze", "Talk:Tea"]
    assert with_bots["score"].tolist()[1] == pytest.approx(30.0)
    assert first_row["title"].tolist() == ["Mont Blanc"]
