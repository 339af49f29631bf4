"""Revision 0002: wiki_activity and pipeline_batches, as the Spark job writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from app.config.clients import libpq_params
from infra.stack import Stack

pytestmark = pytest.mark.integration

NOON = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)


def rows(stack: Stack, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(**libpq_params(stack.settings.postgres)) as connection:
        cursor = connection.cursor()
        cursor.execute(statement, params)
        result = cursor.fetchall() if cursor.description else []
    connection.close()
    return result


def columns(stack: Stack, table: str) -> list[tuple[str, str, str]]:
    return rows(
        stack,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )


def primary_key(stack: Stack, table: str) -> str:
    [(definition,)] = rows(
        stack,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'p'",
        (table,),
    )
    return str(definition)


def test_wiki_activity(stack: Stack) -> None:
    timestamp = "timestamp with time zone"
    assert columns(stack, "wiki_activity") == [
        ("window_start", timestamp, "NO"),
        ("window_end", timestamp, "NO"),
        ("wiki", "text", "NO"),
        ("edits", "bigint", "NO"),
        ("new_pages", "bigint", "NO"),
        ("bot_edits", "bigint", "NO"),
        ("anonymous_edits", "bigint", "NO"),
        ("bytes_added", "bigint", "NO"),
        ("bytes_removed", "bigint", "NO"),
        ("events", "bigint", "NO"),
        ("created_at", timestamp, "NO"),
        ("updated_at", timestamp, "NO"),
    ]
    assert primary_key(stack, "wiki_activity") == "PRIMARY KEY (window_start, wiki)"
    indexes = dict(
        rows(stack, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'wiki_activity'")
    )
    assert "(wiki, window_start DESC)" in indexes["ix_wiki_activity_wiki_window_start"]


@pytest.mark.parametrize(
    "values",
    [
        (NOON, NOON - timedelta(minutes=1), 1, 0, 0, 0, 0, 0, 1),  # window order
        (NOON, NOON + timedelta(minutes=1), 1, 0, 0, 0, -5, 0, 1),  # negative bytes
        (NOON, NOON + timedelta(minutes=1), 2, 0, 0, 0, 0, 0, 1),  # more edits than events
        (NOON, NOON + timedelta(minutes=1), 1, 0, 2, 0, 0, 0, 2),  # more bot edits than edits
    ],
)
def test_wiki_activity_rejects_inconsistent_counts(stack: Stack, values: tuple) -> None:
    with pytest.raises(psycopg2.IntegrityError):
        rows(
            stack,
            "INSERT INTO wiki_activity (window_start, window_end, wiki, edits, new_pages, "
            "bot_edits, anonymous_edits, bytes_added, bytes_removed, events) "
            "VALUES (%s, %s, 'checkwiki', %s, %s, %s, %s, %s, %s, %s)",
            values,
        )


def test_pipeline_batches(stack: Stack) -> None:
    timestamp = "timestamp with time zone"
    assert columns(stack, "pipeline_batches") == [
        ("query_name", "text", "NO"),
        ("batch_id", "bigint", "NO"),
        ("committed_at", timestamp, "NO"),
        ("user_edit_counts_rows", "bigint", "NO"),
        ("wiki_activity_rows", "bigint", "NO"),
        ("started_at", timestamp, "YES"),
        ("duration_ms", "bigint", "YES"),
        ("input_rows", "bigint", "YES"),
        ("rows_dropped_by_watermark", "bigint", "YES"),
        ("max_event_time", timestamp, "YES"),
        ("watermark", timestamp, "YES"),
        ("unknown_schema_rows", "bigint", "YES"),
        ("page_activity_rows", "bigint", "NO"),  # migration 0005
        ("rows_written", "bigint", "NO"),  # made again by 0005, to count the pages
    ]
    assert primary_key(stack, "pipeline_batches") == "PRIMARY KEY (query_name, batch_id)"
    [(written,)] = rows(
        stack,
        "INSERT INTO pipeline_batches (query_name, batch_id, user_edit_counts_rows, "
        "wiki_activity_rows, page_activity_rows) VALUES ('migration-test', 0, 25, 4, 31) "
        "RETURNING rows_written",
    )
    assert written == 60
    rows(stack, "DELETE FROM pipeline_batches WHERE query_name = 'migration-test'")
