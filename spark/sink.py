"""The job's PostgreSQL side: idempotent upserts of a micro-batch, and its pipeline_batches row.

Exactly-once, end to end: Spark may run a micro-batch again after a failure (same offsets, same
state, so the same output rows). :meth:`PostgresSink.write_batch` writes a batch's rows with
``INSERT ... ON CONFLICT ... DO UPDATE`` — in update mode each row carries its window's full
count, not an increment — together with the batch's ``pipeline_batches`` row, in **one**
transaction. A replayed batch therefore rewrites the same values; rows whose values are
already there are not touched at all (not even ``updated_at``).

``pipeline_batches`` gets its progress columns (duration, input rows, rows dropped by the
watermark, records of an unknown schema version, event time, watermark) from the query's
progress report, which Spark publishes only after it has committed the batch:
:meth:`PostgresSink.record_progress` updates the row the batch's transaction wrote, and logs the
batch's one line.

This module imports no pyspark: it takes plain rows, as :func:`spark.transforms.sink_rows`
makes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2.extras import execute_values

from app.config.clients import libpq_params
from app.config.settings import PostgresSettings
from app.contract import WIKI_ACTIVITY_COUNTERS
from spark import (
    SCHEMA_CHECK,
    TABLE_PAGE_ACTIVITY,
    TABLE_PIPELINE_BATCHES,
    TABLE_USER_EDIT_COUNTS,
    TABLE_WIKI_ACTIVITY,
    UNKNOWN_SCHEMA_ROWS,
)

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Rows per INSERT statement (execute_values pages).
PAGE_SIZE = 5000
#: Waits between attempts when PostgreSQL is unreachable: ~2 minutes in all, so a restart or a
#: short outage of the database passes unnoticed. Then the batch fails, the job stops, and
#: Spark runs the batch again from its checkpoint when the job is started again (`up`).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0)

UserRow = tuple[datetime, datetime, str, int]
WikiRow = tuple[datetime, datetime, str, int, int, int, int, int, int, int]
#: window_start, window_end, wiki, namespace, title, server_name, edits, editors, bot_edits,
#: anonymous_edits, bytes_added, bytes_removed, new_page, editor_names, bot_names
PageRow = tuple[
    datetime, datetime, str, int, str, str, int, int, int, int, int, int, bool, list[str], list[str]
]

UPSERT_USER_EDIT_COUNTS = f"""
    INSERT INTO {TABLE_USER_EDIT_COUNTS} AS t (window_start, window_end, user_name, edit_count)
    VALUES %s
    ON CONFLICT (window_start, user_name) DO UPDATE
    SET window_end = EXCLUDED.window_end, edit_count = EXCLUDED.edit_count, updated_at = now()
    WHERE (t.window_end, t.edit_count) IS DISTINCT FROM (EXCLUDED.window_end, EXCLUDED.edit_count)
"""

_WIKI_COUNTERS = WIKI_ACTIVITY_COUNTERS
_WIKI_VALUES = ("window_end", *_WIKI_COUNTERS)
UPSERT_WIKI_ACTIVITY = f"""
    INSERT INTO {TABLE_WIKI_ACTIVITY} AS t
        (window_start, window_end, wiki, {", ".join(_WIKI_COUNTERS)})
    VALUES %s
    ON CONFLICT (window_start, wiki) DO UPDATE
    SET {", ".join(f"{c} = EXCLUDED.{c}" for c in _WIKI_VALUES)}, updated_at = now()
    WHERE ({", ".join(f"t.{c}" for c in _WIKI_VALUES)})
        IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _WIKI_VALUES)})
"""

_PAGE_KEY = ("window_start", "wiki", "namespace", "title")
#: What an upsert may change, in PageRow's order after the key (window_end first).
_PAGE_VALUES = (
    "window_end",
    "server_name",
    "edits",
    "editors",
    "bot_edits",
    "anonymous_edits",
    "bytes_added",
    "bytes_removed",
    "new_page",
    "editor_names",
    "bot_names",
)
UPSERT_PAGE_ACTIVITY = f"""
    INSERT INTO {TABLE_PAGE_ACTIVITY} AS t (window_start, window_end, wiki, namespace, title,
        {", ".join(_PAGE_VALUES[1:])})
    VALUES %s
    ON CONFLICT ({", ".join(_PAGE_KEY)}) DO UPDATE
    SET {", ".join(f"{c} = EXCLUDED.{c}" for c in _PAGE_VALUES)}, updated_at = now()
    WHERE ({", ".join(f"t.{c}" for c in _PAGE_VALUES)})
        IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _PAGE_VALUES)})
"""

UPSERT_BATCH = f"""
    INSERT INTO {TABLE_PIPELINE_BATCHES}
        (query_name, batch_id, committed_at, user_edit_counts_rows, wiki_activity_rows,
         page_activity_rows)
    VALUES (%s, %s, now(), %s, %s, %s)
    ON CONFLICT (query_name, batch_id) DO UPDATE
    SET committed_at = EXCLUDED.committed_at,
        user_edit_counts_rows = EXCLUDED.user_edit_counts_rows,
        wiki_activity_rows = EXCLUDED.wiki_activity_rows,
        page_activity_rows = EXCLUDED.page_activity_rows,
        -- a batch run again gets the progress of its new run
        started_at = NULL, duration_ms = NULL, input_rows = NULL,
        rows_dropped_by_watermark = NULL, max_event_time = NULL, watermark = NULL,
        unknown_schema_rows = NULL
"""

RECORD_PROGRESS = f"""
    UPDATE {TABLE_PIPELINE_BATCHES}
    SET started_at = %(started_at)s, duration_ms = %(duration_ms)s, input_rows = %(input_rows)s,
        rows_dropped_by_watermark = %(rows_dropped_by_watermark)s,
        unknown_schema_rows = %(unknown_schema_rows)s,
        max_event_time = %(max_event_time)s, watermark = %(watermark)s
    WHERE query_name = %(query_name)s AND batch_id = %(batch_id)s
      AND started_at IS NULL
    RETURNING user_edit_counts_rows, wiki_activity_rows, page_activity_rows
"""


# ---- rows ------------------------------------------------------------------------------------


def from_epoch_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class BatchRows:
    """One micro-batch's output, per table, in the tables' column order."""

    user_edit_counts: list[UserRow]
    wiki_activity: list[WikiRow]
    page_activity: list[PageRow] = field(default_factory=list)

    @classmethod
    def split(cls, rows: Iterable[Sequence[Any]]) -> BatchRows:
        """From :func:`spark.transforms.sink_rows` rows: ``(aggregate, window_start_us,
        window_end_us, key, edits, new_pages, bot_edits, anonymous_edits, bytes_added,
        bytes_removed, events, namespace, title, server_name, editor_names, bot_names)``."""
        users: list[UserRow] = []
        wikis: list[WikiRow] = []
        pages: list[PageRow] = []
        for row in rows:
            (aggregate, start_us, end_us, key, edits, new_pages, bots, anonymous, added, removed,
             events, namespace, title, server_name, editor_names, bot_names) = row  # fmt: skip
            start, end = from_epoch_micros(start_us), from_epoch_micros(end_us)
            if aggregate == TABLE_USER_EDIT_COUNTS:
                users.append((start, end, key, edits))
            elif aggregate == TABLE_WIKI_ACTIVITY:
                wikis.append(
                    (start, end, key, edits, new_pages, bots, anonymous, added, removed, events)
                )
            elif aggregate == TABLE_PAGE_ACTIVITY:
                pages.append(
                    (start, end, key, namespace, title, server_name, edits, len(editor_names),
                     bots, anonymous, added, removed, new_pages > 0, list(editor_names),
                     list(bot_names))
                )  # fmt: skip
            else:
                raise ValueError(f"unknown aggregate {aggregate!r}")
        return cls(users, wikis, pages)


def _observed(report: Mapping[str, Any], metric: str, column: str) -> int | None:
    """One column of an observed metric of the report (None when the batch has none)."""
    value = ((report.get("observedMetrics") or {}).get(metric) or {}).get(column)
    return None if value is None else int(value)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class BatchProgress:
    """What a streaming query reports about one executed micro-batch."""

    batch_id: int
    started_at: datetime | None
    duration_ms: int | None
    input_rows: int | None
    rows_dropped_by_watermark: int | None
    max_event_time: datetime | None
    watermark: datetime | None  # the watermark the batch ran with; None before the first
    #: Records of a schema version the job does not read (spark.transforms.known_schema_only).
    unknown_schema_rows: int | None = None
    executed: bool = True  # False for an idle trigger's report: no batch ran

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> BatchProgress:
        """From a StreamingQueryProgress as JSON (``progress.json`` / ``recentProgress``)."""
        event_time = report.get("eventTime") or {}
        durations = report.get("durationMs") or {}
        operators = report.get("stateOperators") or []
        watermark = _parse_time(event_time.get("watermark"))
        duration = report.get("batchDuration", durations.get("triggerExecution"))
        return cls(
            batch_id=int(report["batchId"]),
            started_at=_parse_time(report.get("timestamp")),
            duration_ms=None if duration is None else int(duration),
            input_rows=report.get("numInputRows"),
            rows_dropped_by_watermark=sum(
                int(op.get("numRowsDroppedByWatermark") or 0) for op in operators
            )
            if operators
            else None,
            max_event_time=_parse_time(event_time.get("max")),
            watermark=None if watermark == EPOCH else watermark,
            unknown_schema_rows=_observed(report, SCHEMA_CHECK, UNKNOWN_SCHEMA_ROWS),
            # Spark also reports idle triggers (no new data, no batch): they have no addBatch.
            executed="addBatch" in durations,
        )


# ---- PostgreSQL ------------------------------------------------------------------------------

T = TypeVar("T")


class PostgresSink:
    """One PostgreSQL connection, kept open between batches, and the statements of the job.

    Safe to share between threads: a lock runs one transaction at a time (the progress sink is
    used by the listener's callbacks and by the job's reconcile at the end). The job still gives
    its foreachBatch function and its progress listener a sink each, so that recording progress
    never waits for a batch's write.
    """

    def __init__(
        self,
        postgres: PostgresSettings,
        *,
        query_name: str,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        application_name: str = "wikipulse-spark",
    ) -> None:
        self.query_name = query_name
        self._params = {
            **libpq_params(postgres),  # host, credentials, sslmode, sslrootcert
            "application_name": application_name,
            "connect_timeout": 10,
        }
        self._retry_delays = tuple(retry_delays)
        self._connection: psycopg2.extensions.connection | None = None
        # One connection, used from more than one thread (foreachBatch, the progress
        # listener's callbacks, the job's reconcile at the end): one statement at a time.
        self._lock = threading.RLock()

    # -- connection --

    def _connect(self) -> psycopg2.extensions.connection:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(**self._params)
        return self._connection

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and not self._connection.closed:
                self._connection.close()
            self._connection = None

    def transaction(self, work: Callable[[psycopg2.extensions.cursor], T]) -> T:
        """Run ``work`` in one transaction; on a lost connection reconnect and run it again."""
        for attempt, delay in enumerate((*self._retry_delays, None)):
            try:
                with self._lock:
                    connection = self._connect()
                    with connection, connection.cursor() as cursor:
                        return work(cursor)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                self.close()
                if delay is None:
                    raise
                log.warning(
                    "PostgreSQL: %s (attempt %d); retrying in %.1f s",
                    str(error).strip(),
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- the statements --

    def write_batch(self, batch_id: int, rows: BatchRows) -> None:
        """Upsert a micro-batch's rows and its pipeline_batches row, in one transaction."""

        def work(cursor: psycopg2.extensions.cursor) -> None:
            if rows.user_edit_counts:
                execute_values(
                    cursor, UPSERT_USER_EDIT_COUNTS, rows.user_edit_counts, page_size=PAGE_SIZE
                )
            if rows.wiki_activity:
                execute_values(
                    cursor, UPSERT_WIKI_ACTIVITY, rows.wiki_activity, page_size=PAGE_SIZE
                )
            if rows.page_activity:
                execute_values(
                    cursor, UPSERT_PAGE_ACTIVITY, rows.page_activity, page_size=PAGE_SIZE
                )
            cursor.execute(
                UPSERT_BATCH,
                (self.query_name, batch_id, len(rows.user_edit_counts), len(rows.wiki_activity),
                 len(rows.page_activity)),
            )  # fmt: skip

        self.transaction(work)

    def record_progress(self, progress: BatchProgress) -> bool:
        """Fill in the progress columns of the batch's row, once; log the batch's line.

        False when there is no row to fill: an idle trigger, a batch this sink did not write,
        or a row whose progress is there already (the listener and :meth:`RunningJob.reconcile`
        may both report a batch; the first one wins).
        """

        def work(cursor: psycopg2.extensions.cursor) -> tuple[int, int, int] | None:
            cursor.execute(
                RECORD_PROGRESS,
                {
                    "query_name": self.query_name,
                    "batch_id": progress.batch_id,
                    "started_at": progress.started_at,
                    "duration_ms": progress.duration_ms,
                    "input_rows": progress.input_rows,
                    "rows_dropped_by_watermark": progress.rows_dropped_by_watermark,
                    "unknown_schema_rows": progress.unknown_schema_rows,
                    "max_event_time": progress.max_event_time,
                    "watermark": progress.watermark,
                },
            )
            return cursor.fetchone()

        written = self.transaction(work)
        if written is None:
            return False
        log.info(
            "Batch %d: wrote %d rows to %s, %d to %s, %d to %s (late rows dropped: %d)",
            progress.batch_id,
            written[0],
            TABLE_USER_EDIT_COUNTS,
            written[1],
            TABLE_WIKI_ACTIVITY,
            written[2],
            TABLE_PAGE_ACTIVITY,
            progress.rows_dropped_by_watermark or 0,
        )
        if progress.unknown_schema_rows:
            log.warning(
                "Batch %d: %d records of a schema version this job does not read were skipped "
                "(see spark/README.md, 'Schema versions')",
                progress.batch_id,
                progress.unknown_schema_rows,
            )
        return True

    def forget_batches(self) -> int:
        """Delete this query's pipeline_batches rows (a rebuild restarts its batch ids at 0)."""

        def work(cursor: psycopg2.extensions.cursor) -> int:
            cursor.execute(
                f"DELETE FROM {TABLE_PIPELINE_BATCHES} WHERE query_name = %s", (self.query_name,)
            )
            return int(cursor.rowcount)

        return self.transaction(work)
