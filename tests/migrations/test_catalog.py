"""The schema the migrations make, object by object, against a snapshot: the catalog after
``upgrade`` to each revision, and after a round trip down and up, is exactly the one in
``tests/migrations/catalog/<revision>.txt``.

Those files were written once from the migrations as they were before 0003 was written out as
literal SQL (issue 12, commit a40723e: its trigger functions built from f-string templates), and
again from commit 0ac00de when 0004 came, from 02cb06c when 0005 and 0006 came, from bd2fd90 when
0007 and 0008 came and from 6ffa8db when 0009 came (the earlier revisions' unchanged byte for
byte), so rewriting a migration's
Python cannot change what a database holds without this test noticing: tables, columns, constraints,
indexes, views, every function's full definition (``pg_get_functiondef``: a PL/pgSQL body is kept
verbatim, so even its whitespace counts), triggers, and the revision.

To write them again from some commit's ``alembic/versions`` (on the PostgreSQL of the tests):

    WIKIPULSE_WRITE_CATALOG=<commit> .venv/bin/python -m pytest tests/migrations/test_catalog.py

A server of another major version deparses some definitions differently; the test then builds the
expected catalog from the commit named in the files instead (when git has it), else it skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import psycopg2
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command
from app.config import Settings
from app.config.clients import libpq_params
from infra.migrations import alembic_config
from infra.stack import Stack
from tests.harness import scratch_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).resolve().parent / "catalog"
REVISIONS = ("0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
WRITE = os.environ.get("WIKIPULSE_WRITE_CATALOG")

#: Each section of the catalog: a title and a query over the schema ``public`` whose rows are
#: written one per line (a multi-line value, such as a function, as it is).
SECTIONS: dict[str, str] = {
    "revision": "SELECT version_num FROM alembic_version ORDER BY 1",
    "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
    "relations": """
        SELECT c.relname, c.relkind::text, c.relpersistence::text, c.reloptions::text,
               c.relrowsecurity, c.relacl::text
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
        ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,
               a.attgenerated::text, nullif(a.attcollation, t.typcollation)::regcollation::text,
               a.attacl::text
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_type AS t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
        ORDER BY 1, 2""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, c.contype::text,
               pg_get_constraintdef(c.oid, true), c.condeferrable, c.condeferred
        FROM pg_constraint AS c JOIN pg_namespace AS n ON n.oid = c.connamespace
        WHERE n.nspname = 'public'
        ORDER BY 1, 2""",
    "indexes": """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
        ORDER BY 1""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid, true)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
        ORDER BY 1""",
    "rules": """
        SELECT tablename, rulename, definition FROM pg_rules
        WHERE schemaname = 'public' ORDER BY 1, 2""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, t.typtype::text, format_type(t.typbasetype, t.typtypmod),
               (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                FROM pg_enum AS e WHERE e.enumtypid = t.oid)
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('d', 'e', 'r', 'm')
        ORDER BY 1""",
    "functions": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               p.proacl::text,
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid)
                    ELSE p.prokind::text END
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'
        ORDER BY 1""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled::text,
               pg_get_triggerdef(t.oid, true)
        FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal
        ORDER BY 1, 2""",
    "comments": """
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
        FROM pg_description AS d
        WHERE (d.classoid = 'pg_class'::regclass AND d.objoid IN (
                   SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n
                   ON n.oid = c.relnamespace WHERE n.nspname = 'public'))
           OR (d.classoid = 'pg_proc'::regclass AND d.objoid IN (
                   SELECT p.oid FROM pg_proc AS p JOIN pg_namespace AS n
                   ON n.oid = p.pronamespace WHERE n.nspname = 'public'))
        ORDER BY 1""",
}


def query(settings: Settings, statement: str) -> list[tuple]:
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall()
    finally:
        connection.close()


def server_major(settings: Settings) -> int:
    [(number,)] = query(settings, "SELECT current_setting('server_version_num')::int")
    return int(number) // 10000


def catalog(settings: Settings) -> str:
    """The schema ``public`` of the database, as text: one section per kind of object."""
    parts = []
    for title, statement in SECTIONS.items():
        parts.append(f"## {title}")
        for row in query(settings, statement):
            parts.append(" | ".join("NULL" if value is None else str(value) for value in row))
    return "\n".join(parts) + "\n"


@contextmanager
def migrations_of(commit: str, settings: Settings) -> Iterator[Config]:
    """An Alembic configuration that runs ``alembic/versions`` as of ``commit`` (with today's
    ``env.py``, which only finds the database)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "alembic/versions"],
        capture_output=True,
        check=True,
    ).stdout
    directory = Path(tempfile.mkdtemp(prefix="wikipulse-alembic-"))
    try:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        for name in ("env.py", "script.py.mako"):
            shutil.copy(ROOT / "alembic" / name, directory / "alembic" / name)
        config = alembic_config(settings)
        config.set_main_option("script_location", str(directory / "alembic"))
        yield config
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def header(commit: str, major: int, revision: str) -> str:
    return (
        f"# The catalog after `alembic upgrade {revision}`: tests/migrations/test_catalog.py.\n"
        f"# Written from the migrations of commit {commit} on PostgreSQL {major}.\n"
    )


def snapshots_of(commit: str, stack: Stack, stack_env: dict[str, str]) -> dict[str, str]:
    """Each revision's catalog, built by the migrations of ``commit``."""
    with (
        scratch_database(stack, stack_env, revision=None) as settings,
        migrations_of(commit, settings) as config,
    ):
        result = {}
        for revision in REVISIONS:
            command.upgrade(config, revision)
            result[revision] = catalog(settings)
        return result


def expected_catalogs(stack: Stack, stack_env: dict[str, str], major: int) -> dict[str, str]:
    """The snapshots, or (on another major version of PostgreSQL) the same built again."""
    texts = {r: (SNAPSHOTS / f"{r}.txt").read_text() for r in REVISIONS}
    headers = {}
    for revision, text in texts.items():
        found = re.search(r"^# Written from the migrations of commit (\w+) on PostgreSQL (\d+)\.$",
                          text, re.MULTILINE)  # fmt: skip
        assert found, f"catalog/{revision}.txt has no header"
        headers[revision] = (found[1], int(found[2]))
    commit, written_on = headers[REVISIONS[0]]
    assert set(headers.values()) == {(commit, written_on)}, headers
    if written_on == major:
        return {r: text.split("\n", 2)[2] for r, text in texts.items()}
    try:
        return snapshots_of(commit, stack, stack_env)
    except subprocess.CalledProcessError as error:
        pytest.skip(
            f"the snapshots are of PostgreSQL {written_on}, the server is {major}, and git cannot "
            f"give commit {commit} to build them again: {error.stderr.decode().strip()}"
        )


@pytest.fixture(scope="module")
def expected(stack: Stack, stack_env: dict[str, str]) -> dict[str, str]:
    major = server_major(stack.settings)
    if WRITE:
        snapshots = snapshots_of(WRITE, stack, stack_env)
        SNAPSHOTS.mkdir(exist_ok=True)
        for revision, text in snapshots.items():
            (SNAPSHOTS / f"{revision}.txt").write_text(header(WRITE, major, revision) + text)
        pytest.skip(f"wrote {SNAPSHOTS}/{{{','.join(REVISIONS)}}}.txt from commit {WRITE}")
    return expected_catalogs(stack, stack_env, major)


def test_the_catalog_of_each_revision_and_of_a_round_trip_is_the_snapshot(
    stack: Stack, stack_env: dict[str, str], expected: dict[str, str]
) -> None:
    with scratch_database(stack, stack_env, revision=None) as settings:
        config = alembic_config(settings)
        command.upgrade(config, "0002")
        assert catalog(settings) == expected["0002"]
        command.upgrade(config, "0003")
        assert catalog(settings) == expected["0003"]

        command.downgrade(config, "0002")
        assert catalog(settings) == expected["0002"]
        command.upgrade(config, "0003")
        assert catalog(settings) == expected["0003"]

        command.upgrade(config, "0004")
        assert catalog(settings) == expected["0004"]
        command.downgrade(config, "0003")
        assert catalog(settings) == expected["0003"]

        command.downgrade(config, "base")
        left = query(settings, SECTIONS["relations"]) + query(settings, SECTIONS["functions"])
        assert [row[0] for row in left] == ["alembic_version", "alembic_version_pkc"]
        command.upgrade(config, "head")
        assert catalog(settings) == expected[REVISIONS[-1]]


def test_the_snapshots_reach_head(stack: Stack) -> None:
    head = ScriptDirectory.from_config(alembic_config(stack.settings)).get_current_head()
    assert head == REVISIONS[-1], (
        f"a new revision {head}: add it to REVISIONS, and its catalog to catalog/ "
        "(WIKIPULSE_WRITE_CATALOG, see the docstring)"
    )


def test_the_snapshot_holds_every_trigger_and_its_function(expected: dict[str, str]) -> None:
    """The snapshot is not vacuous: 0003's eight triggers and their functions are in it."""
    text = expected["0003"]
    for table, prefix in (
        ("user_edit_counts", "user_edit_counts_rollup"),
        ("wiki_activity", "wiki_activity_rollup"),
    ):
        for operation in ("insert", "update", "delete", "truncate"):
            assert f"CREATE TRIGGER {prefix}_{operation} AFTER {operation.upper()} ON {table}" in (
                text.replace("public.", "")
            )
            assert f"CREATE OR REPLACE FUNCTION public.{prefix}_{operation}()" in text
