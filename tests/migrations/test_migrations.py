"""`alembic upgrade head` makes the seed's schema; `downgrade base` removes it; up again works."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from psycopg2 import sql

from alembic import command
from app.config import Settings, load_settings
from app.config.clients import libpq_params
from infra.migrations import alembic_config, schema_revision
from infra.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch_settings(stack: Stack, stack_env: dict[str, str]) -> Iterator[Settings]:
    """Settings pointing at a new, empty database owned by the configured user."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    user = stack.settings.postgres.user
    with stack.postgres.admin() as cursor:
        cursor.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(user)
            )
        )
    yield load_settings(environ={**stack_env, "POSTGRES_DATABASE": name})
    with stack.postgres.admin() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def query(settings: Settings, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(**libpq_params(settings.postgres)) as connection:
        cursor = connection.cursor()
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def insert_counts(settings: Settings, rows: list[tuple[datetime, datetime, str, int]]) -> None:
    with psycopg2.connect(**libpq_params(settings.postgres)) as connection:
        connection.cursor().executemany(
            "INSERT INTO user_edit_counts (window_start, window_end, user_name, edit_count) "
            "VALUES (%s, %s, %s, %s)",
            rows,
        )


def relations(settings: Settings) -> set[tuple[str, str]]:
    rows = query(
        settings,
        "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "AND c.relname NOT LIKE 'alembic_version%%' AND c.relkind IN ('r', 'v', 'i', 'p')",
    )
    return set(rows)


def columns(settings: Settings, relation: str) -> list[tuple[str, str]]:
    return query(
        settings,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (relation,),
    )


def test_upgrade_downgrade_upgrade(scratch_settings: Settings) -> None:
    config = alembic_config(scratch_settings)
    command.upgrade(config, "head")
    created = relations(scratch_settings)
    assert ("user_edit_counts", "r") in created
    assert ("recent_user_activity", "v") in created
    assert ("top_contributors_hourly", "v") in created
    assert schema_revision(scratch_settings)[0] == schema_revision(scratch_settings)[1]

    command.downgrade(config, "base")
    assert relations(scratch_settings) == set()
    assert schema_revision(scratch_settings)[0] is None

    command.upgrade(config, "head")
    assert relations(scratch_settings) == created


def test_user_edit_counts_matches_the_seed(stack: Stack) -> None:
    settings = stack.settings
    assert columns(settings, "user_edit_counts") == [
        ("window_start", "timestamp with time zone"),
        ("window_end", "timestamp with time zone"),
        ("user_name", "character varying"),
        ("edit_count", "bigint"),
        ("created_at", "timestamp with time zone"),
        ("updated_at", "timestamp with time zone"),
    ]
    [(length,)] = query(
        settings,
        "SELECT character_maximum_length FROM information_schema.columns "
        "WHERE table_name = 'user_edit_counts' AND column_name = 'user_name'",
    )
    assert length == 255
    [(primary_key,)] = query(
        settings,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'user_edit_counts'::regclass AND contype = 'p'",
    )
    assert primary_key == "PRIMARY KEY (window_start, user_name)"
    indexes = {
        name: definition
        for name, definition in query(
            settings,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'user_edit_counts'",
        )
    }
    assert "(window_start DESC)" in indexes["ix_user_edit_counts_window_start"]
    assert "(user_name)" in indexes["ix_user_edit_counts_user_name"]


def test_views_return_the_seeds_columns_and_rows(scratch_settings: Settings) -> None:
    command.upgrade(alembic_config(scratch_settings), "head")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    # alice: 3 + 2 edits in the last hour; bob: 4 now and 10 two days ago; carol 1 at 90 min.
    for minutes_ago, user, count in [
        (1, "alice", 3),
        (2, "alice", 2),
        (1, "bob", 4),
        (2 * 24 * 60, "bob", 10),
        (90, "carol", 1),
    ]:
        start = now - timedelta(minutes=minutes_ago)
        rows.append((start, start + timedelta(minutes=1), user, count))
    insert_counts(scratch_settings, rows)
    assert [name for name, _ in columns(scratch_settings, "recent_user_activity")] == [
        "window_start",
        "window_end",
        "user_name",
        "edit_count",
    ]
    recent = query(scratch_settings, "SELECT user_name, edit_count FROM recent_user_activity")
    assert sorted(recent) == [("alice", 2), ("alice", 3), ("bob", 4), ("carol", 1)]

    assert [name for name, _ in columns(scratch_settings, "top_contributors_hourly")] == [
        "user_name",
        "total_edits",
        "active_windows",
        "last_active",
    ]
    top = query(
        scratch_settings,
        "SELECT user_name, total_edits, active_windows FROM top_contributors_hourly",
    )
    assert top == [("alice", 5, 2), ("bob", 4, 1)]


def test_top_contributors_hourly_keeps_the_top_50(scratch_settings: Settings) -> None:
    command.upgrade(alembic_config(scratch_settings), "head")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    insert_counts(
        scratch_settings,
        [(start, start + timedelta(minutes=1), f"user{i:03d}", i + 1) for i in range(60)],
    )
    top = query(scratch_settings, "SELECT user_name, total_edits FROM top_contributors_hourly")
    assert len(top) == 50
    assert top[0] == ("user059", 60) and top[-1] == ("user010", 11)


def test_alembic_ini_holds_no_database_url() -> None:
    from infra.migrations import ALEMBIC_INI

    text = ALEMBIC_INI.read_text()
    assert "sqlalchemy.url" not in text and "postgresql://" not in text
