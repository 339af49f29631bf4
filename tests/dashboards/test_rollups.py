"""Migration 0003: the rollups follow the base tables through every write the pipeline makes
(the Spark sink's upserts, a replayed batch, the retention's deletes, TRUNCATE), the backfill
builds the same rollups as the triggers, and the migration goes down and up again."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from psycopg2.extras import execute_values

from alembic import command
from app.config import Settings
from app.config.clients import libpq_params
from infra.migrations import alembic_config
from infra.stack import Stack
from spark.retention import delete_expired
from spark.sink import UPSERT_USER_EDIT_COUNTS, UPSERT_WIKI_ACTIVITY, BatchRows, PostgresSink
from tests.dashboards.conftest import execute, scratch_database

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
DAY0 = datetime(2026, 5, 1, tzinfo=UTC)
COUNTERS = "edits, new_pages, bot_edits, anonymous_edits, bytes_added, bytes_removed, events"

#: Each rollup recomputed from its base table, in the rollup's own columns and order.
EXPECTED = {
    "user_edit_rollup": """
        SELECT g.grain, date_trunc(g.grain, u.window_start, 'UTC'), u.user_name,
               sum(u.edit_count)
        FROM user_edit_counts u CROSS JOIN (VALUES ('hour'), ('day')) g (grain)
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
    "activity_totals": f"""
        SELECT g.grain, date_trunc(g.grain, w.window_start, 'UTC'),
               {", ".join(f"sum({c})" for c in COUNTERS.split(", "))}
        FROM wiki_activity w CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) g (grain)
        GROUP BY 1, 2 ORDER BY 1, 2""",
    "wiki_activity_rollup": f"""
        SELECT g.grain, date_trunc(g.grain, w.window_start, 'UTC'), w.wiki,
               {", ".join(f"sum({c})" for c in COUNTERS.split(", "))}
        FROM wiki_activity w CROSS JOIN (VALUES ('hour'), ('day')) g (grain)
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
    # the registers each bucket's users set: (grain, bucket, register, rho)
    "editor_sketches": """
        SELECT g.grain,
               CASE WHEN g.grain = 'ten_minutes'
                    THEN date_bin('10 minutes', u.window_start, '2026-01-01 00:00+00')
                    ELSE date_trunc(g.grain, u.window_start, 'UTC') END,
               editor_sketch_register(u.user_name), max(editor_sketch_rho(u.user_name))
        FROM user_edit_counts u CROSS JOIN (VALUES ('ten_minutes'), ('hour'), ('day')) g (grain)
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
}
ACTUAL = {
    "user_edit_rollup": "SELECT grain, bucket, user_name, edits FROM user_edit_rollup "
    "ORDER BY 1, 2, 3",
    "activity_totals": f"SELECT grain, bucket, {COUNTERS} FROM activity_totals ORDER BY 1, 2",
    "wiki_activity_rollup": f"SELECT grain, bucket, wiki, {COUNTERS} FROM wiki_activity_rollup "
    "ORDER BY 1, 2, 3",
    "editor_sketches": """
        SELECT s.grain, s.bucket, r.i, get_byte(s.registers, r.i)
        FROM editor_sketches s CROSS JOIN generate_series(0, 4095) r (i)
        WHERE get_byte(s.registers, r.i) > 0 ORDER BY 1, 2, 3""",
}


def assert_rollups_match(settings: Settings) -> None:
    for table, expected in EXPECTED.items():
        assert execute(settings, ACTUAL[table]) == execute(settings, expected), table


def batch(rng: random.Random, minutes: list[datetime], users: int) -> BatchRows:
    """One micro-batch as the Spark job writes it: full counts per window."""
    user_rows, wiki_rows = [], []
    for start in minutes:
        for user in rng.sample(range(users), k=min(users, 12)):
            user_rows.append((start, start + MINUTE, f"user {user}", rng.randint(1, 9)))
        for wiki in ("enwiki", "dewiki", "wikidatawiki"):
            edits = rng.randint(1, 50)
            bots = rng.randint(0, edits)
            wiki_rows.append(
                (start, start + MINUTE, wiki, edits, rng.randint(0, edits), bots,
                 rng.randint(0, edits - bots), rng.randint(0, 9999), rng.randint(0, 999),
                 edits + rng.randint(0, 20))
            )  # fmt: skip
    return BatchRows(user_rows, wiki_rows)


def test_rollups_follow_the_sinks_writes_and_the_retention(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    rng = random.Random(5)
    with scratch_database(stack, stack_env) as (settings, _):
        sink = PostgresSink(settings.postgres, query_name="test_rollups")
        try:
            # three days of windows, a few per hour, across day boundaries
            minutes = [DAY0 + timedelta(hours=h, minutes=rng.randrange(60)) for h in range(72)]
            sink.write_batch(0, batch(rng, minutes, users=40))
            assert_rollups_match(settings)
            # update mode: the same windows again with new counts, plus new windows
            later = [DAY0 + timedelta(days=3, minutes=m) for m in range(0, 600, 7)]
            second = batch(rng, minutes[-10:] + later, users=40)
            sink.write_batch(1, second)
            assert_rollups_match(settings)
            # a replayed batch writes the same rows: nothing changes
            before = {table: execute(settings, query) for table, query in ACTUAL.items()}
            sink.write_batch(1, second)
            assert {table: execute(settings, query) for table, query in ACTUAL.items()} == before
        finally:
            sink.close()
        # the retention deletes whole days here, in small rounds: it counts back from the
        # newest window (later[-1], DAY0 + 3 days 09:55) to a midnight cutoff, DAY0 + 2 days
        deleted = delete_expired(
            settings.postgres,
            retention=later[-1] - (DAY0 + timedelta(days=2)),
            batch_rows=100,
            pause=0,
        )
        assert deleted["user_edit_counts"] > 0 and deleted["wiki_activity"] > 0
        assert_rollups_match(settings)
        [(oldest,)] = execute(settings, "SELECT min(bucket) FROM editor_sketches")
        assert oldest == DAY0 + timedelta(days=2)

        execute(settings, "TRUNCATE user_edit_counts, wiki_activity")
        for table in ACTUAL:
            assert execute(settings, f"SELECT count(*) FROM {table}") == [(0,)], table


def test_backfill_equals_the_triggers_and_the_migration_goes_down_and_up(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    rng = random.Random(8)
    with scratch_database(stack, stack_env) as (settings, _):
        config = alembic_config(settings)
        command.downgrade(config, "0002")
        tables = {name for (name,) in execute(settings, "SELECT tablename FROM pg_tables "
                                                        "WHERE schemaname = 'public'")}  # fmt: skip
        assert "user_edit_rollup" not in tables and "editor_sketches" not in tables
        assert execute(settings, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == [(0,)]
        # The aggregates as the sink upserts them (its pipeline_batches row needs a later
        # revision's columns: 0003's backfill reads only the aggregates).
        rows = batch(rng, [DAY0 + timedelta(minutes=37 * i) for i in range(90)], users=25)
        connection = psycopg2.connect(**libpq_params(settings.postgres))
        try:
            with connection, connection.cursor() as cursor:
                execute_values(cursor, UPSERT_USER_EDIT_COUNTS, rows.user_edit_counts)
                execute_values(cursor, UPSERT_WIKI_ACTIVITY, rows.wiki_activity)
        finally:
            connection.close()
        command.upgrade(config, "head")  # the backfill
        assert_rollups_match(settings)
        command.downgrade(config, "0002")
        command.upgrade(config, "head")
        assert_rollups_match(settings)
        # and down to nothing: no table, index, view, function or trigger is left behind
        command.downgrade(config, "base")
        leftovers = execute(
            settings,
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND relname NOT LIKE 'alembic_version%%' "
            "UNION ALL SELECT proname FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
        )
        assert leftovers == []
