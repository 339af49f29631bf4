"""Retention: delete aggregates older than ``postgres.retention_days``, a few rows at a time.

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
from datetime import UTC, datetime, timedelta

import psycopg2

from app.settings import PostgresSettings
from spark import TABLE_PIPELINE_BATCHES, TABLE_USER_EDIT_COUNTS, TABLE_WIKI_ACTIVITY

log = logging.getLogger(__name__)

#: (table, its time column): rows whose time is older than the retention are deleted.
TABLES = (
    (TABLE_USER_EDIT_COUNTS, "window_start"),
    (TABLE_WIKI_ACTIVITY, "window_start"),
    (TABLE_PIPELINE_BATCHES, "committed_at"),
)
BATCH_ROWS = 5000
INTERVAL = timedelta(hours=1)
#: Breathing room between two rounds of one run.
PAUSE = 0.05


def delete_expired(
    postgres: PostgresSettings,
    *,
    now: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
    pause: float = PAUSE,
) -> dict[str, int]:
    """Delete what is older than the retention from every table; the rows deleted per table."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=postgres.retention_days)
    deleted: dict[str, int] = {}
    connection = psycopg2.connect(
        **{**postgres.libpq_params(), "application_name": "wikipulse-retention"}
    )
    try:
        for table, column in TABLES:
            deleted[table] = 0
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
            "retention: deleted rows older than %s: %s",
            cutoff.isoformat(timespec="seconds"),
            ", ".join(f"{count} from {table}" for table, count in deleted.items()),
        )
    return deleted


class RetentionThread(threading.Thread):
    """Runs :func:`delete_expired` now and every ``interval`` until :meth:`stop`."""

    def __init__(self, postgres: PostgresSettings, *, interval: timedelta = INTERVAL) -> None:
        super().__init__(name="wikipulse-retention", daemon=True)
        self.postgres = postgres
        self.interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                delete_expired(self.postgres)
            except psycopg2.Error as error:
                log.warning("retention: failed (%s); next try in %s", error, self.interval)
            self._stopped.wait(self.interval.total_seconds())

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
