"""Every ```sql block of the READMEs runs, read-only, against a database migrated to head (a
scratch database of the session's PostgreSQL, with a few rows in each table)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg2
import pytest

from app.config.clients import libpq_params
from infra.stack import Stack
from tests.harness import scratch_database
from tests.test_repository import READMES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.M | re.S)

SEED = """
INSERT INTO user_edit_counts (window_start, window_end, user_name, edit_count)
SELECT m, m + INTERVAL '1 minute', u, n
FROM generate_series(date_trunc('minute', now()) - INTERVAL '90 minutes',
                     date_trunc('minute', now()), INTERVAL '1 minute') AS m,
     (VALUES ('Example', 3), ('SomeBot', 7), ('192.0.2.1', 1)) AS t (u, n);
INSERT INTO wiki_activity (window_start, window_end, wiki, edits, new_pages, bot_edits,
                           anonymous_edits, bytes_added, bytes_removed, events)
SELECT m, m + INTERVAL '1 minute', w, 11, 1, 7, 1, 500, 40, 12
FROM generate_series(date_trunc('minute', now()) - INTERVAL '90 minutes',
                     date_trunc('minute', now()), INTERVAL '1 minute') AS m,
     (VALUES ('enwiki'), ('dewiki')) AS t (w);
INSERT INTO pipeline_batches (query_name, batch_id, committed_at, user_edit_counts_rows,
                              wiki_activity_rows, started_at, duration_ms, input_rows,
                              rows_dropped_by_watermark, max_event_time, watermark)
SELECT 'wikipulse_aggregates', b, now() - (10 - b) * INTERVAL '30 seconds', 3, 2,
       now() - (10 - b) * INTERVAL '30 seconds' - INTERVAL '2 seconds', 1500, 40, 0,
       now() - (10 - b) * INTERVAL '30 seconds' - INTERVAL '3 seconds',
       now() - (10 - b) * INTERVAL '30 seconds' - INTERVAL '2 minutes'
FROM generate_series(0, 9) AS b;
INSERT INTO page_activity (window_start, window_end, wiki, namespace, title, server_name, edits,
                           editors, bot_edits, anonymous_edits, bytes_added, bytes_removed,
                           new_page, editor_names, bot_names)
SELECT date_trunc('minute', now()) - m * INTERVAL '1 minute',
       date_trunc('minute', now()) - (m - 1) * INTERVAL '1 minute', 'enwiki', 0, 'Example',
       'en.wikipedia.org', 3, 3, 0, 0, 30, 0, m = 5, ARRAY['Ann', 'Ben', 'Cy'], '{}'
FROM generate_series(1, 5) AS m;
"""


def sections(readme: str) -> dict[str, str]:
    """A README's ``## `` sections by title."""
    parts = re.split(r"^## (.+)$", readme, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def sql_blocks(text: str) -> list[str]:
    return [match.group(1) for match in SQL_BLOCK.finditer(text)]


def test_the_sections_have_their_queries() -> None:
    schema = sections((ROOT / "alembic" / "README.md").read_text())
    assert len(sql_blocks(schema["Example queries"])) >= 8
    operations = sections((ROOT / "infra" / "README.md").read_text())
    assert len(sql_blocks(operations["Monitoring"])) >= 3


def test_every_sql_block_of_the_readmes_runs(stack: Stack, stack_env: dict[str, str]) -> None:
    blocks = [block for readme in READMES for block in sql_blocks(readme.read_text())]
    assert len(blocks) >= 11
    with scratch_database(stack, stack_env) as settings:
        connection = psycopg2.connect(**libpq_params(settings.postgres))
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(SEED)
            connection.set_session(readonly=True)  # the examples only read
            results = []
            for block in blocks:
                with connection, connection.cursor() as cursor:
                    try:
                        cursor.execute(block)
                    except psycopg2.Error as error:
                        pytest.fail(f"README query failed: {error}\n{block}")
                    results.append(cursor.fetchall() if cursor.description else [])
        finally:
            connection.close()
    # On these rows each query has something to show (the last statement of each block).
    empty = [block for block, rows in zip(blocks, results, strict=True) if not rows]
    assert not empty, "README queries that found nothing in the seeded rows:\n" + "\n".join(empty)
