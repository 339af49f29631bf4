"""Retention: delete aggregates more than ``postgres.retention_days`` older than the newest row
(``page_activity``: ``postgres.page_activity_retention``).

The cutoff is per table: the newest time in the table (event time, the windows' start, like the
rest of the pipeline; ``pipeline_batches``: the newest commit) minus the retention. The wall
clock plays no part, so a replay or backfill of old events stays until newer events push it out
(counted from "now", a replay of last year's recording would be deleted by the next round).

Each round deletes at most :data:`BATCH_ROWS` rows in its own short transaction, so readers
(never blocked by a DELETE in PostgreSQL) and the job's upserts (which touch recent windows,
not these) never wait long, and autovacuum keeps up. The job runs it at start and then every
:data:`INTERVAL` in a background thread; ``python -m spark.retention`` runs it once (cron,
or by hand).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import psycopg2
from psycopg2.extensions import cursor as Cursor

from app.config.clients import libpq_params
from app.config.settings import PostgresSettings
from spark import (
    TABLE_ALERTS,
    TABLE_PAGE_ACTIVITY,
    TABLE_PIPELINE_BATCHES,
    TABLE_USER_EDIT_COUNTS,
    TABLE_WIKI_ACTIVITY,
)

log = logging.getLogger(__name__)

#: (table, its time column, kept only for ``postgres.page_activity_retention``): rows older than
#: the table's newest time minus the retention are deleted. Each column leads an index, so max()
#: and the range of old rows are index reads. page_activity's hours stay the full retention.
TABLES = (
    (TABLE_USER_EDIT_COUNTS, "window_start", False),
    (TABLE_WIKI_ACTIVITY, "window_start", False),
    (TABLE_PAGE_ACTIVITY, "window_start", True),
    ("page_activity_hourly", "hour", False),
    (TABLE_PIPELINE_BATCHES, "committed_at", False),
    # An alert's notifications and deliveries go with it (ON DELETE CASCADE).
    (TABLE_ALERTS, "window_start", False),
)
BATCH_ROWS = 5000
INTERVAL = timedelta(hours=1)
#: Breathing room between two rounds of one run.
PAUSE = 0.05


def newest_time(cursor: Cursor, table: str, column: str) -> datetime | None:
    """The table's newest time (None: the table is empty); max() reads the end of the index."""
    cursor.execute(f"SELECT max({column}) FROM {table}")
    row = cursor.fetchone()
    latest: datetime | None = row[0] if row else None
    return latest


def delete_expired(
    postgres: PostgresSettings,
    *,
    retention: timedelta | None = None,
    batch_rows: int = BATCH_ROWS,
    pause: float = PAUSE,
) -> dict[str, int]:
    """Delete from every table the rows older than its newest time minus ``retention``
    (default ``postgres.retention_days``; ``page_activity``: ``postgres.page_activity_retention``,
    or ``retention`` if shorter); the rows deleted per table."""
    keep = retention if retention is not None else timedelta(days=postgres.retention_days)
    keep_pages = min(keep, postgres.page_activity_retention)
    deleted: dict[str, int] = {}
    cutoffs: dict[str, datetime] = {}
    connection = psycopg2.connect(
        **{**libpq_params(postgres), "application_name": "wikipulse-retention"}
    )
    try:
        for table, column, short_lived in TABLES:
            kept = keep_pages if short_lived else keep
            deleted[table] = 0
            with connection, connection.cursor() as cursor:
                latest = newest_time(cursor, table, column)
            if latest is None:
                continue
            # Fixed for the run: rows arriving meanwhile move the cutoff at the next run.
            cutoff = cutoffs[table] = latest - kept
            while True:
                with connection, connection.cursor() as cursor:
                    # ctid: delete exactly the rows the sub-select picked, by their location.
                    cursor.execute(
                        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                        f"SELECT ctid FROM {table} WHERE {column} < %s LIMIT %s))",
                        (cutoff, batch_rows),
                    )
                    count = cursor.rowcount
                deleted[table] += count
                if count < batch_rows:
                    break
                time.sleep(pause)
    finally:
        connection.close()
    if any(deleted.values()):
        log.info(
            "retention: deleted %s",
            ", ".join(
                f"{count} rows from {table} (older than "
                f"{cutoffs[table].isoformat(timespec='seconds')})"
                for table, count in deleted.items()
                if count
            ),
        )
    return deleted


class RetentionThread(threading.Thread):
    """Runs :func:`delete_expired` now and every ``interval`` until :meth:`stop` (the first
    round runs even if the job stops at once, so every start applies the retention)."""

    def __init__(self, postgres: PostgresSettings, *, interval: timedelta = INTERVAL) -> None:
        super().__init__(name="wikipulse-retention", daemon=True)
        self.postgres = postgres
        self.interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                delete_expired(self.postgres)
            except psycopg2.Error as error:
                log.warning("retention: failed (%s); next try in %s", error, self.interval)
            if self._stopped.wait(self.interval.total_seconds()):
                return

    def stop(self) -> None:
        self._stopped.set()


def main() -> int:
    """``python -m spark.retention``: delete expired aggregates once."""
    from app.config import load_settings_or_exit

    settings = load_settings_or_exit("spark.retention")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    deleted = delete_expired(settings.postgres)
    log.info("retention: %s", ", ".join(f"{table}: {count}" for table, count in deleted.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
