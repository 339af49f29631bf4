"""The PostgreSQL side of the job, without Spark: upserts, one transaction per batch, the
pipeline_batches row, reconnection, retention."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from psycopg2 import sql

from app.config import Settings
from infra.stack import Stack
from spark.retention import delete_expired
from spark.sink import BatchProgress, BatchRows, PostgresSink
from tests.spark.conftest import JobSettings
from tests.spark.helpers import batches, query, snapshot

NOON = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
QUERY = "test_query"


def micros(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000)


#: The page columns of a row of another aggregate (spark.transforms.aggregate).
NOT_A_PAGE = (None, None, None, [], [])


def sink_rows(users: dict[str, int], wikis: dict[str, int], at: datetime = NOON) -> BatchRows:
    """Rows as spark.transforms.sink_rows makes them; a wiki's counters derived from one n."""
    start, end = micros(at), micros(at + MINUTE)
    return BatchRows.split(
        [
            *(
                ("user_edit_counts", start, end, user, n, 0, 0, 0, 0, 0, n, *NOT_A_PAGE)
                for user, n in users.items()
            ),
            *(
                ("wiki_activity", start, end, wiki, n, 1, 0, 0, 10 * n, n, n + 2, *NOT_A_PAGE)
                for wiki, n in wikis.items()
            ),
        ]
    )


@pytest.fixture
def db(job_settings: JobSettings) -> Settings:
    return job_settings()


@pytest.fixture
def sink(db: Settings) -> Iterator[PostgresSink]:
    writer = PostgresSink(db.postgres, query_name=QUERY, retry_delays=(0.1, 0.5))
    yield writer
    writer.close()


def test_rows_are_split_per_table_with_utc_window_bounds() -> None:
    rows = sink_rows({"Alice": 2}, {"enwiki": 3})
    assert rows.user_edit_counts == [(NOON, NOON + MINUTE, "Alice", 2)]
    assert rows.wiki_activity == [(NOON, NOON + MINUTE, "enwiki", 3, 1, 0, 0, 30, 3, 5)]
    assert rows.user_edit_counts[0][0].tzinfo is not None
    with pytest.raises(ValueError, match="unknown aggregate"):
        BatchRows.split([("elsewhere", 0, 1, "x", 1, 0, 0, 0, 0, 0, 1, *NOT_A_PAGE)])


def test_a_page_row_counts_its_editors_and_says_whether_it_was_created() -> None:
    start, end = micros(NOON), micros(NOON + MINUTE)
    rows = BatchRows.split(
        [
            ("page_activity", start, end, "dewiki", 3, 1, 1, 0, 120, 4, 3,
             0, "Köln", "de.wikipedia.org", ["Anna", "Bernd-Bot"], ["Bernd-Bot"]),
            ("page_activity", start, end, "dewiki", 1, 0, 0, 1, 0, 0, 1,
             1, "Diskussion:Köln", "de.wikipedia.org", [], []),
        ]
    )  # fmt: skip
    assert rows.page_activity == [
        (NOON, NOON + MINUTE, "dewiki", 0, "Köln", "de.wikipedia.org", 3, 2, 1, 0, 120, 4, True,
         ["Anna", "Bernd-Bot"], ["Bernd-Bot"]),
        (NOON, NOON + MINUTE, "dewiki", 1, "Diskussion:Köln", "de.wikipedia.org", 1, 0, 0, 1, 0,
         0, False, [], []),
    ]  # fmt: skip
    assert rows.user_edit_counts == [] and rows.wiki_activity == []


def test_progress_is_read_from_the_querys_report() -> None:
    report = {
        "id": "q",
        "runId": "r",
        "name": "wikipulse_aggregates",
        "timestamp": "2026-11-28T12:56:18.538Z",
        "batchId": 7,
        "batchDuration": 5922,
        "numInputRows": 384,
        "durationMs": {"addBatch": 5000, "triggerExecution": 5922},
        "eventTime": {
            "max": "2026-06-20T15:49:57.000Z",
            "watermark": "2026-06-20T15:47:57.000Z",
        },
        "stateOperators": [{"numRowsDroppedByWatermark": 2}, {"numRowsDroppedByWatermark": 1}],
    }
    progress = BatchProgress.from_report(report)
    assert progress == BatchProgress(
        batch_id=7,
        started_at=datetime(2026, 11, 28, 12, 56, 18, 538000, tzinfo=UTC),
        duration_ms=5922,
        input_rows=384,
        rows_dropped_by_watermark=3,
        max_event_time=datetime(2026, 6, 20, 15, 49, 57, tzinfo=UTC),
        watermark=datetime(2026, 6, 20, 15, 47, 57, tzinfo=UTC),
    )
    assert progress.executed
    first = BatchProgress.from_report(
        {**report, "eventTime": {"watermark": "1970-01-01T00:00:00.000Z"}}
    )
    assert first.watermark is None and first.max_event_time is None  # no watermark yet
    idle = BatchProgress.from_report(
        {
            "batchId": 8,
            "timestamp": report["timestamp"],
            "numInputRows": 0,
            "durationMs": {"latestOffset": 3, "triggerExecution": 3},
        }
    )
    assert not idle.executed


@pytest.mark.integration
def test_writing_the_same_batch_twice_changes_nothing(db: Settings, sink: PostgresSink) -> None:
    rows = sink_rows({"Alice": 2, "Bob": 1, "Ünïcödé 名前": 4}, {"enwiki": 3, "dewiki": 1})
    sink.write_batch(0, rows)
    before = {t: snapshot(db, t) for t in ("user_edit_counts", "wiki_activity")}
    assert len(before["user_edit_counts"]) == 3 and len(before["wiki_activity"]) == 2
    sink.write_batch(0, rows)
    after = {t: snapshot(db, t) for t in ("user_edit_counts", "wiki_activity")}
    assert after == before  # values, created_at, updated_at and xmin: no row was rewritten
    [batch] = batches(db)
    assert (batch["query_name"], batch["batch_id"]) == (QUERY, 0)
    assert (batch["user_edit_counts_rows"], batch["wiki_activity_rows"], batch["rows_written"]) == (
        3,
        2,
        5,
    )


@pytest.mark.integration
def test_a_later_batch_corrects_a_window(db: Settings, sink: PostgresSink) -> None:
    sink.write_batch(0, sink_rows({"Alice": 1}, {"enwiki": 1}))
    [(created, updated)] = query(db, "SELECT created_at, updated_at FROM user_edit_counts")
    sink.write_batch(1, sink_rows({"Alice": 3, "Bob": 1}, {"enwiki": 4}))
    rows = query(
        db, "SELECT user_name, edit_count, created_at, updated_at FROM user_edit_counts ORDER BY 1"
    )
    assert [(user, count) for user, count, _, _ in rows] == [("Alice", 3), ("Bob", 1)]
    assert rows[0][2] == created and rows[0][3] > updated
    assert query(db, "SELECT edits, bytes_added, events FROM wiki_activity") == [(4, 40, 6)]
    assert [b["batch_id"] for b in batches(db)] == [0, 1]


@pytest.mark.integration
def test_a_batch_is_one_transaction(db: Settings, sink: PostgresSink) -> None:
    good = sink_rows({"Alice": 1}, {"enwiki": 1})
    broken = BatchRows(
        good.user_edit_counts,
        [(NOON, NOON - MINUTE, "enwiki", 1, 0, 0, 0, 0, 0, 1)],  # window_end before its start
    )
    with pytest.raises(psycopg2.IntegrityError):
        sink.write_batch(0, broken)
    assert query(db, "SELECT count(*) FROM user_edit_counts") == [(0,)]
    assert batches(db) == []
    sink.write_batch(0, good)  # the connection is usable again
    assert query(db, "SELECT count(*) FROM user_edit_counts") == [(1,)]


@pytest.mark.integration
def test_one_sink_is_safe_to_share_between_threads(db: Settings, sink: PostgresSink) -> None:
    """The progress listener (Spark's callback thread) and the job's final reconcile (the main
    thread) record progress through one sink while batches are written."""
    rows = sink_rows({"Alice": 1}, {"enwiki": 1})
    for batch_id in range(20):
        sink.write_batch(batch_id, rows)

    def report(batch_id: int) -> BatchProgress:
        return BatchProgress(
            batch_id=batch_id,
            started_at=NOON,
            duration_ms=batch_id,
            input_rows=1,
            rows_dropped_by_watermark=0,
            max_event_time=NOON,
            watermark=None,
        )

    errors: list[BaseException] = []

    def record(batch_ids: range) -> None:
        try:
            for batch_id in batch_ids:
                sink.record_progress(report(batch_id))
                sink.write_batch(batch_id + 100, rows)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=record, args=(range(20),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert {b["batch_id"] for b in batches(db) if b["duration_ms"] is not None} == set(range(20))


@pytest.mark.integration
def test_progress_is_recorded_once_per_run_of_a_batch(
    db: Settings, sink: PostgresSink, caplog: pytest.LogCaptureFixture
) -> None:
    progress = BatchProgress(
        batch_id=12,
        started_at=NOON,
        duration_ms=1500,
        input_rows=40,
        rows_dropped_by_watermark=0,
        max_event_time=NOON - MINUTE,
        watermark=NOON - 3 * MINUTE,
    )
    assert not sink.record_progress(progress)  # no such batch (yet)
    rows = sink_rows({f"user{i}": 1 for i in range(25)}, {f"wiki{i}": 1 for i in range(4)})
    sink.write_batch(12, rows)
    with caplog.at_level(logging.INFO, logger="spark.sink"):
        assert sink.record_progress(progress)
        assert not sink.record_progress(progress)  # the listener and the final check both report
    assert caplog.messages == [
        "Batch 12: wrote 25 rows to user_edit_counts, 4 to wiki_activity, 0 to page_activity "
        "(late rows dropped: 0)"
    ]
    [batch] = batches(db)
    assert batch["started_at"] == NOON and batch["duration_ms"] == 1500
    assert batch["input_rows"] == 40 and batch["rows_dropped_by_watermark"] == 0
    assert batch["max_event_time"] == NOON - MINUTE and batch["watermark"] == NOON - 3 * MINUTE
    sink.write_batch(12, rows)  # the batch runs again: its progress is that of the new run
    assert batches(db)[0]["started_at"] is None
    assert sink.record_progress(progress)


@pytest.mark.integration
def test_the_sink_reconnects_after_losing_its_connection(
    stack: Stack, db: Settings, sink: PostgresSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.write_batch(0, sink_rows({"Alice": 1}, {}))
    with stack.postgres.admin() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'wikipulse-spark'",
            (db.postgres.database,),
        )
        assert cursor.fetchall() == [(True,)]
    with caplog.at_level(logging.WARNING, logger="spark.sink"):
        sink.write_batch(1, sink_rows({"Alice": 2}, {}))
    assert query(db, "SELECT edit_count FROM user_edit_counts") == [(2,)]
    assert any("retrying" in message for message in caplog.messages)


@pytest.mark.integration
def test_retention_deletes_what_is_older_than_the_retention(db: Settings, stack: Stack) -> None:
    # Counted back from each table's newest row (NOON here; the newest batch's commit), not
    # from the wall clock: the minutes 31 days before it go, in rounds of two rows.
    old, recent = NOON - timedelta(days=31), NOON
    sink = PostgresSink(db.postgres, query_name=QUERY)
    try:
        for i, at in enumerate([old, old + MINUTE, old + 2 * MINUTE, recent]):
            sink.write_batch(i, sink_rows({"Alice": 1, "Bob": 2}, {"enwiki": 1}, at=at))
    finally:
        sink.close()
    query(db, "UPDATE pipeline_batches SET committed_at = %s WHERE batch_id < 3", (old,))
    deleted = delete_expired(db.postgres, batch_rows=2, pause=0)
    assert deleted == {
        "user_edit_counts": 6,
        "wiki_activity": 3,
        "pipeline_batches": 3,
        "page_activity": 0,
        "page_activity_hourly": 0,
        "alerts": 0,
    }
    assert query(db, "SELECT DISTINCT window_start FROM user_edit_counts") == [(recent,)]
    assert query(db, "SELECT window_start FROM wiki_activity") == [(recent,)]
    assert [b["batch_id"] for b in batches(db)] == [3]
    assert delete_expired(db.postgres) == dict.fromkeys(deleted, 0)

    def retention_connections() -> int:
        with stack.postgres.admin(db.postgres.database) as cursor:
            cursor.execute(
                sql.SQL(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = 'wikipulse-retention'"
                ),
                (db.postgres.database,),
            )
            return cursor.fetchone()[0]

    # Nothing left open (a job stopped by an earlier test may take a moment to close its own).
    deadline = time.monotonic() + 15
    while retention_connections() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert retention_connections() == 0
