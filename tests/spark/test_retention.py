"""Retention counts from the newest time in each table, never from the wall clock: old history
stays while it is the newest, and newer rows push older ones out exactly at the cutoff.

Rows are written with plain INSERTs at times chosen by hand (two years and more before these
tests were written); every boundary below is worked out by hand from
``postgres.retention_days`` = 30."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from spark.retention import RetentionThread, delete_expired
from tests.spark.conftest import JobSettings
from tests.spark.helpers import query

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
#: The newest window of the first tests: a replay of events from two years before 2026.
NEWEST = datetime(2024, 3, 31, 12, 0, tzinfo=UTC)
#: NEWEST minus 30 days, by hand (2024 is a leap year: March 31 - 30 days = March 1).
CUTOFF = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
#: Tables the first tests write nothing to.
PAGES = {"page_activity": 0, "page_activity_hourly": 0, "alerts": 0}
NOTHING = {"user_edit_counts": 0, "wiki_activity": 0, "pipeline_batches": 0, **PAGES}


@pytest.fixture
def db(job_settings: JobSettings) -> Settings:
    settings = job_settings()
    assert settings.postgres.retention_days == 30  # the boundaries below assume it
    return settings


def add_user_windows(db: Settings, user: str, *starts: datetime) -> None:
    for start in starts:
        query(
            db,
            "INSERT INTO user_edit_counts (window_start, window_end, user_name, edit_count) "
            "VALUES (%s, %s, %s, 1)",
            (start, start + MINUTE, user),
        )


def add_wiki_windows(db: Settings, wiki: str, *starts: datetime) -> None:
    for start in starts:
        query(
            db,
            "INSERT INTO wiki_activity (window_start, window_end, wiki, edits, new_pages, "
            "bot_edits, anonymous_edits, bytes_added, bytes_removed, events) "
            "VALUES (%s, %s, %s, 2, 0, 1, 0, 30, 5, 3)",
            (start, start + MINUTE, wiki),
        )


def add_batches(db: Settings, *committed: datetime, first_id: int = 0) -> None:
    for batch_id, at in enumerate(committed, start=first_id):
        query(
            db,
            "INSERT INTO pipeline_batches (query_name, batch_id, committed_at, "
            "user_edit_counts_rows, wiki_activity_rows) VALUES ('test', %s, %s, 1, 1)",
            (batch_id, at),
        )


def user_starts(db: Settings) -> list[datetime]:
    return [s for (s,) in query(db, "SELECT window_start FROM user_edit_counts ORDER BY 1")]


def wiki_starts(db: Settings) -> list[datetime]:
    return [s for (s,) in query(db, "SELECT window_start FROM wiki_activity ORDER BY 1")]


def batch_times(db: Settings) -> list[datetime]:
    return [t for (t,) in query(db, "SELECT committed_at FROM pipeline_batches ORDER BY 1")]


def test_empty_tables_delete_nothing(db: Settings) -> None:
    assert delete_expired(db.postgres) == NOTHING


def test_history_two_years_old_stays_while_it_is_the_newest(db: Settings) -> None:
    # 30 days of windows ending two years before now: the wall clock would delete them all.
    newest = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2 * 365)
    starts = [newest - timedelta(days=30), newest - timedelta(days=12, minutes=7), newest]
    add_user_windows(db, "Ada", *starts)
    add_wiki_windows(db, "enwiki", *starts)
    add_batches(db, *starts)
    assert delete_expired(db.postgres, batch_rows=1, pause=0) == NOTHING
    assert user_starts(db) == wiki_starts(db) == batch_times(db) == starts
    # and the rollups the triggers keep: one minute bucket per window, none dropped
    assert query(
        db, "SELECT bucket, edits, events FROM activity_totals WHERE grain = 'minute' ORDER BY 1"
    ) == [(start, 2, 3) for start in starts]


def test_newer_rows_push_older_ones_out_exactly_at_the_cutoff(db: Settings) -> None:
    before_cutoff = [CUTOFF - timedelta(days=1), CUTOFF - MINUTE]  # Feb 29 12:00, Mar 1 11:59
    after_cutoff = [CUTOFF, CUTOFF + MINUTE, NEWEST - MINUTE, NEWEST]
    for add in (add_user_windows, add_wiki_windows):
        add(db, "Ada" if add is add_user_windows else "enwiki", *before_cutoff, *after_cutoff)
    add_batches(db, *before_cutoff, *after_cutoff)

    deleted = delete_expired(db.postgres, batch_rows=1, pause=0)  # one row per round
    assert deleted == {"user_edit_counts": 2, "wiki_activity": 2, "pipeline_batches": 2, **PAGES}
    assert user_starts(db) == wiki_starts(db) == batch_times(db) == after_cutoff
    assert delete_expired(db.postgres) == NOTHING  # the same newest row: nothing more

    # One minute newer: the cutoff moves to Mar 1 12:01, and the row at 12:00 goes.
    add_user_windows(db, "Bea", NEWEST + MINUTE)
    add_wiki_windows(db, "dewiki", NEWEST + MINUTE)
    add_batches(db, NEWEST + MINUTE, first_id=99)
    assert delete_expired(db.postgres) == {
        "user_edit_counts": 1,
        "wiki_activity": 1,
        "pipeline_batches": 1,
        **PAGES,
    }
    kept = [
        datetime(2024, 3, 1, 12, 1, tzinfo=UTC),
        datetime(2024, 3, 31, 11, 59, tzinfo=UTC),
        datetime(2024, 3, 31, 12, 0, tzinfo=UTC),
        datetime(2024, 3, 31, 12, 1, tzinfo=UTC),
    ]
    assert user_starts(db) == wiki_starts(db) == batch_times(db) == kept
    # the rollups lost the deleted minutes and their day: Feb 29 and Mar 1 12:00 are gone
    assert query(
        db, "SELECT bucket, edits FROM activity_totals WHERE grain = 'day' ORDER BY 1"
    ) == [(datetime(2024, 3, 1, tzinfo=UTC), 2), (datetime(2024, 3, 31, tzinfo=UTC), 6)]
    assert query(
        db,
        "SELECT bucket, user_name, edits FROM user_edit_rollup WHERE grain = 'hour' ORDER BY 1, 2",
    ) == [
        (datetime(2024, 3, 1, 12, tzinfo=UTC), "Ada", 1),
        (datetime(2024, 3, 31, 11, tzinfo=UTC), "Ada", 1),
        (datetime(2024, 3, 31, 12, tzinfo=UTC), "Ada", 1),
        (datetime(2024, 3, 31, 12, tzinfo=UTC), "Bea", 1),
    ]


def test_each_table_counts_from_its_own_newest_row(db: Settings) -> None:
    # user_edit_counts is newest (Mar 31), wiki_activity stopped on Jan 10, pipeline_batches
    # on Jun 1 2023: a cutoff shared from the newest of all would empty the other two.
    add_user_windows(db, "Ada", CUTOFF - MINUTE, CUTOFF, NEWEST)
    wiki_newest = datetime(2024, 1, 10, 8, 30, tzinfo=UTC)
    wiki_cutoff = datetime(2023, 12, 11, 8, 30, tzinfo=UTC)  # Jan 10 - 30 days, by hand
    add_wiki_windows(db, "enwiki", wiki_cutoff - MINUTE, wiki_cutoff, wiki_newest)
    batches_newest = datetime(2023, 6, 1, 0, 0, 30, tzinfo=UTC)
    batches_cutoff = datetime(2023, 5, 2, 0, 0, 30, tzinfo=UTC)  # Jun 1 - 30 days, by hand
    add_batches(db, batches_cutoff - timedelta(microseconds=1), batches_cutoff, batches_newest)

    assert delete_expired(db.postgres) == {
        "user_edit_counts": 1,
        "wiki_activity": 1,
        "pipeline_batches": 1,
        **PAGES,
    }
    assert user_starts(db) == [CUTOFF, NEWEST]
    assert wiki_starts(db) == [wiki_cutoff, wiki_newest]
    assert batch_times(db) == [batches_cutoff, batches_newest]


def test_an_alert_goes_with_its_notifications_and_deliveries(db: Settings) -> None:
    for start in (CUTOFF - MINUTE, CUTOFF, NEWEST):
        (alert,) = query(
            db,
            "INSERT INTO alerts (kind, wiki, window_start, window_end, detected_window_end, "
            "observed, expected, deviation, score) "
            "VALUES ('wiki_surge', 'enwiki', %s, %s, %s, 90, 20, 4.5, 15.6) RETURNING id",
            (start, start + MINUTE, start + MINUTE),
        )
        (notification,) = query(
            db,
            "INSERT INTO alert_notifications (alert_id, event) VALUES (%s, 'opened') RETURNING id",
            alert,
        )
        query(db, "INSERT INTO alert_deliveries (notification_id, url) VALUES (%s, 'http://h/')",
              notification)  # fmt: skip
    assert delete_expired(db.postgres)["alerts"] == 1
    assert query(db, "SELECT window_start FROM alerts ORDER BY 1") == [(CUTOFF,), (NEWEST,)]
    assert query(db, "SELECT count(*) FROM alert_notifications") == [(2,)]
    assert query(db, "SELECT count(*) FROM alert_deliveries") == [(2,)]


def test_the_retention_setting_and_an_explicit_retention(job_settings: JobSettings) -> None:
    db = job_settings(POSTGRES_RETENTION_DAYS="2")
    add_user_windows(db, "Ada", NEWEST - timedelta(days=3), NEWEST - timedelta(days=2), NEWEST)
    assert delete_expired(db.postgres)["user_edit_counts"] == 1
    assert user_starts(db) == [NEWEST - timedelta(days=2), NEWEST]
    # an explicit retention overrides the setting (the same rule, another length)
    assert delete_expired(db.postgres, retention=timedelta(hours=1))["user_edit_counts"] == 1
    assert user_starts(db) == [NEWEST]


def test_the_jobs_thread_applies_the_retention_at_start_even_if_stopped_at_once(
    db: Settings,
) -> None:
    add_user_windows(db, "Ada", CUTOFF - MINUTE, NEWEST)
    thread = RetentionThread(db.postgres)
    thread.stop()  # as a job that ends before the thread gets its turn
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert user_starts(db) == [NEWEST]
