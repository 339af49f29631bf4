"""The DataFrame transforms on small in-memory DataFrames (batch mode: no Kafka, no state)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from app.contract import ChangeType, RecentChange, UserKind
from app.normalize.batch import encode_typed
from spark.schema import EVENT_SCHEMA
from spark.transforms import (
    AGGREGATE_COLUMNS,
    PAGE_ACTIVITY,
    USER_EDIT_COUNTS,
    WIKI_ACTIVITY,
    aggregate,
    page_activity,
    parse_events,
    sink_rows,
    user_edit_counts,
    wiki_activity,
)

MINUTE = timedelta(minutes=1)
NOON = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)
_serial = iter(range(1_000_000))


def event(
    at: datetime,
    *,
    type: ChangeType = ChangeType.EDIT,
    user: str | None = "Alice",
    kind: UserKind = UserKind.REGISTERED,
    wiki: str = "enwiki",
    delta: int | None = 10,
    title: str | None = None,
) -> RecentChange:
    number = next(_serial)
    edit = type in (ChangeType.EDIT, ChangeType.NEW)
    return RecentChange(
        source_schema="/mediawiki/recentchange/1.0.0",
        event_id=f"id-{number}",
        event_time=at,
        emitted_at=at + timedelta(seconds=1),
        wiki=wiki,
        server_name=f"{wiki}.example.org",
        type=type,
        namespace=0,
        title=title or f"Page {number}",
        user=user,
        user_kind=kind,
        bot=kind is UserKind.BOT,
        length_old=None if not edit or type is ChangeType.NEW else 100,
        length_new=None if not edit or delta is None else 100 + delta,
        length_delta=delta if edit else None,
    )


def records(spark: SparkSession, values: list[bytes]) -> DataFrame:
    return spark.createDataFrame([(value,) for value in values], "value binary")


def aggregated(
    spark: SparkSession, events: list[RecentChange], window: timedelta = MINUTE
) -> DataFrame:
    return aggregate(parse_events(records(spark, [encode_typed(e) for e in events])), window)


def test_parse_events_keeps_the_typed_events_only(spark: SparkSession) -> None:
    good = event(NOON + timedelta(seconds=1, microseconds=500_000))
    without_fraction = event(NOON + timedelta(seconds=2))
    no_time = orjson.loads(encode_typed(event(NOON)))
    del no_time["event_time"]
    values = [
        encode_typed(good),
        b"not json",
        orjson.dumps(no_time),
        orjson.dumps({"wiki": "enwiki"}),
        encode_typed(without_fraction),
    ]
    parsed = parse_events(records(spark, values))
    assert parsed.schema.fieldNames() == EVENT_SCHEMA.fieldNames()
    got = {
        row.event_id: row.asDict()
        for row in parsed.selectExpr(
            "event_id", "unix_micros(event_time) AS t", "type", "user_kind"
        ).collect()
    }
    assert got == {
        good.event_id: {
            "event_id": good.event_id,
            "t": micros(good.event_time),
            "type": "edit",
            "user_kind": "registered",
        },
        without_fraction.event_id: {
            "event_id": without_fraction.event_id,
            "t": micros(without_fraction.event_time),
            "type": "edit",
            "user_kind": "registered",
        },
    }


def test_user_edit_counts_counts_edits_and_new_pages_per_user_across_wikis(
    spark: SparkSession,
) -> None:
    events = [
        event(NOON + timedelta(seconds=10)),
        event(NOON + timedelta(seconds=50), type=ChangeType.NEW),
        event(NOON + timedelta(seconds=40), wiki="dewiki"),
        event(NOON + timedelta(seconds=20), type=ChangeType.LOG),
        event(NOON + timedelta(seconds=21), type=ChangeType.CATEGORIZE),
        event(NOON + timedelta(seconds=30), user=None, kind=UserKind.HIDDEN),
        event(NOON + timedelta(seconds=65), user="Bob"),
        event(NOON + timedelta(seconds=66), user="1.2.3.4", kind=UserKind.ANONYMOUS),
    ]
    expected = spark.createDataFrame(
        [
            (NOON, NOON + MINUTE, "Alice", 3),
            (NOON + MINUTE, NOON + 2 * MINUTE, "Bob", 1),
            (NOON + MINUTE, NOON + 2 * MINUTE, "1.2.3.4", 1),
        ],
        "window_start timestamp, window_end timestamp, user_name string, edit_count long",
    )
    assertDataFrameEqual(user_edit_counts(aggregated(spark, events)), expected)


def test_wiki_activity_counts_every_kind_of_event(spark: SparkSession) -> None:
    at = NOON + timedelta(seconds=5)
    events = [
        event(at, delta=100),
        event(at, type=ChangeType.NEW, user="ArchiverBot", kind=UserKind.BOT, delta=50),
        event(at, user="2001:db8::1", kind=UserKind.ANONYMOUS, delta=-30),
        event(at, user="~2026-35935-22", kind=UserKind.TEMPORARY, delta=0),
        event(at, user=None, kind=UserKind.HIDDEN, delta=-5),
        event(at, user="ListBot", kind=UserKind.BOT, delta=None),  # an edit without lengths
        event(at, type=ChangeType.LOG),
        event(at, type=ChangeType.CATEGORIZE),
        event(at, type=ChangeType.EXTERNAL),
        event(at, wiki="dewiki", delta=-7),
    ]
    columns = "window_start timestamp, window_end timestamp, wiki string, " + ", ".join(
        f"{name} long" for name in AGGREGATE_COLUMNS
    )
    expected = spark.createDataFrame(
        [
            # edits, new_pages, bot_edits, anonymous_edits, bytes_added, bytes_removed, events
            (NOON, NOON + MINUTE, "enwiki", 6, 1, 2, 2, 150, 35, 9),
            (NOON, NOON + MINUTE, "dewiki", 1, 0, 0, 0, 0, 7, 1),
        ],
        columns,
    )
    assertDataFrameEqual(wiki_activity(aggregated(spark, events)), expected)


def micros(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (MINUTE, [(NOON, 2), (NOON + MINUTE, 1)]),
        (5 * MINUTE, [(NOON, 3)]),
    ],
)
def test_windows_are_half_open_and_follow_the_configured_duration(
    spark: SparkSession, window: timedelta, expected: list[tuple[datetime, int]]
) -> None:
    events = [
        event(NOON),
        event(NOON + MINUTE - timedelta(microseconds=1)),
        event(NOON + MINUTE),
    ]
    rows = wiki_activity(aggregated(spark, events, window)).selectExpr(
        "unix_micros(window_start) AS start", "unix_micros(window_end) AS end", "events"
    )
    got = sorted((row.start, row.end, row.events) for row in rows.collect())
    assert got == [(micros(start), micros(start + window), count) for start, count in expected]


def test_sink_rows_carry_both_tables_with_epoch_microsecond_bounds(spark: SparkSession) -> None:
    events = [event(NOON, title="Lyon"), event(NOON, user=None, kind=UserKind.HIDDEN, title="Lyon")]
    rows = sink_rows(aggregated(spark, events))
    got: list[tuple[Any, ...]] = sorted(tuple(row) for row in rows.collect())
    start, end = micros(NOON), micros(NOON + MINUTE)
    assert got == [
        (PAGE_ACTIVITY, start, end, "enwiki", 2, 0, 0, 0, 20, 0, 2,
         0, "Lyon", "enwiki.example.org", ["Alice"], []),
        (USER_EDIT_COUNTS, start, end, "Alice", 1, 0, 0, 0, 10, 0, 1, None, None, None, [], []),
        (WIKI_ACTIVITY, start, end, "enwiki", 2, 0, 0, 0, 20, 0, 2, None, None, None, [], []),
    ]  # fmt: skip


def test_page_activity_counts_a_pages_edits_and_its_distinct_editors(
    spark: SparkSession,
) -> None:
    events = [
        event(NOON, type=ChangeType.NEW, title="Lyon", delta=300),
        event(NOON + timedelta(seconds=5), title="Lyon", delta=-20),  # Alice again
        event(NOON + timedelta(seconds=9), user="Bot-Fr", kind=UserKind.BOT, title="Lyon"),
        event(NOON + timedelta(seconds=12), user="192.0.2.4", kind=UserKind.ANONYMOUS,
              title="Lyon", delta=4),
        event(NOON + timedelta(seconds=30), user=None, kind=UserKind.HIDDEN, title="Lyon"),
        event(NOON + timedelta(seconds=40), type=ChangeType.LOG, title="Lyon"),  # not an edit
        event(NOON + MINUTE, title="Lyon"),  # the next minute
    ]  # fmt: skip
    got = sorted(tuple(row) for row in page_activity(aggregated(spark, events)).collect())
    common = ("enwiki", 0, "Lyon", "enwiki.example.org")
    noon = NOON.replace(tzinfo=None)  # collected in the session's time zone, UTC, as naive times
    assert got == [
        (noon, noon + MINUTE, *common, 5, 3, 1, 1, 324, 20, True,
         ["192.0.2.4", "Alice", "Bot-Fr"], ["Bot-Fr"]),
        (noon + MINUTE, noon + 2 * MINUTE, *common, 1, 1, 0, 0, 10, 0, False, ["Alice"], []),
    ]  # fmt: skip
