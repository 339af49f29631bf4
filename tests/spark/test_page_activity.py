"""page_activity as the sink writes it: its hourly rollup follows the upserts (a replayed batch
adds nothing) and a TRUNCATE, and its minutes are kept for ``postgres.page_activity_retention``
while their hours stay. Rows written by hand, expected values worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from spark.retention import delete_expired
from spark.sink import BatchRows, PageRow, PostgresSink
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import query, snapshot

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOURLY = (
    "SELECT hour, wiki, namespace, title, server_name, edits, bot_edits, anonymous_edits, "
    "bytes_added, bytes_removed, new_pages FROM page_activity_hourly ORDER BY 1, 2, 3, 4"
)


def page(
    start: datetime, title: str, edits: int, editors: list[str], *, bots: tuple[str, ...] = (),
    bot_edits: int = 0, anonymous: int = 0, added: int = 0, removed: int = 0, new: bool = False,
) -> PageRow:  # fmt: skip
    return (
        start, start + MINUTE, "frwiki", 0, title, "fr.wikipedia.org", edits, len(editors),
        bot_edits, anonymous, added, removed, new, editors, list(bots),
    )  # fmt: skip


@pytest.fixture
def db(job_settings: JobSettings) -> Settings:
    return job_settings()


def write(db: Settings, batch_id: int, pages: list[PageRow]) -> None:
    sink = PostgresSink(db.postgres, query_name="pages")
    try:
        sink.write_batch(batch_id, BatchRows([], [], pages))
    finally:
        sink.close()


def test_the_hourly_rollup_follows_the_upserts_and_a_replay_adds_nothing(db: Settings) -> None:
    write(db, 0, [
        page(NOON, "Lyon", 2, ["Amélie", "Bot-Fr"], bots=("Bot-Fr",), bot_edits=1, added=40,
             new=True),
        page(NOON + MINUTE, "Lyon", 1, ["Amélie"], removed=7),
        page(NOON + 59 * MINUTE, "Nantes", 1, ["198.51.100.7"], anonymous=1, added=3),
        page(NOON + 60 * MINUTE, "Nantes", 4, ["Claire"], added=1),  # the next hour
    ])  # fmt: skip
    # The next batch: the minute 12:01 of Lyon again with its full count (update mode).
    second = [page(NOON + MINUTE, "Lyon", 3, ["Amélie", "Denis"], removed=9, added=5)]
    write(db, 1, second)
    one = NOON.replace(hour=13)
    expected = [
        (NOON, "frwiki", 0, "Lyon", "fr.wikipedia.org", 5, 1, 0, 45, 9, 1),
        (NOON, "frwiki", 0, "Nantes", "fr.wikipedia.org", 1, 0, 1, 3, 0, 0),
        (one, "frwiki", 0, "Nantes", "fr.wikipedia.org", 4, 0, 0, 1, 0, 0),
    ]
    assert query(db, HOURLY) == expected
    lyon = "SELECT editors, editor_names FROM page_activity WHERE title = 'Lyon' ORDER BY 1, 2"
    assert query(db, lyon) == [(2, ["Amélie", "Bot-Fr"]), (2, ["Amélie", "Denis"])]
    before = {table: snapshot(db, table) for table in ("page_activity", "page_activity_hourly")}
    write(db, 1, second)  # Spark runs batch 1 again after a crash: the same rows
    assert {table: snapshot(db, table) for table in before} == before  # not even rewritten
    assert query(db, "SELECT page_activity_rows, rows_written FROM pipeline_batches "
                     "ORDER BY batch_id") == [(4, 4), (1, 1)]  # fmt: skip


def test_minutes_go_after_their_retention_and_their_hours_stay(db: Settings) -> None:
    assert db.postgres.page_activity_retention == timedelta(hours=48)
    newest = NOON + timedelta(days=3)
    write(db, 0, [
        page(NOON, "Lille", 2, ["Émile"], added=10),
        page(newest - timedelta(hours=48), "Lille", 1, ["Émile"]),  # the cutoff: kept
        page(newest, "Lille", 1, ["Fanny"]),
    ])  # fmt: skip
    deleted = delete_expired(db.postgres)
    assert (deleted["page_activity"], deleted["page_activity_hourly"]) == (1, 0)
    kept = query(db, "SELECT window_start FROM page_activity ORDER BY 1")
    assert kept == [(newest - timedelta(hours=48),), (newest,)]
    hours = query(db, "SELECT hour, edits, bytes_added FROM page_activity_hourly ORDER BY 1")
    assert hours == [(NOON, 2, 10), (newest - timedelta(hours=48), 1, 0), (newest, 1, 0)]


def test_truncating_the_minutes_before_a_rebuild_empties_their_hours(db: Settings) -> None:
    """spark/README.md's rebuild after a change of definition truncates page_activity first; its
    hours must go with it, or the rebuild's rows would be counted in them twice (migration
    0009)."""
    rows = [page(NOON, "Lille", 2, ["Émile"], added=10), page(NOON + MINUTE, "Lille", 1, ["Fanny"])]
    write(db, 0, rows)
    query(db, "TRUNCATE page_activity")
    assert query(db, HOURLY) == []
    write(db, 1, rows)  # the rebuild writes the same minutes again
    assert query(db, HOURLY) == [
        (NOON, "frwiki", 0, "Lille", "fr.wikipedia.org", 3, 0, 0, 10, 0, 0)
    ]
