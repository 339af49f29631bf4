"""Dashboard benchmark: the page's queries on days of aggregates at live volume, and what the
rollups cost their writers. Prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python tests/benchmarks/bench_dashboard.py [--days 30] [--users-per-minute 480]
        [--wikis-per-minute 150] [--samples 20] [--rows 100000] [--skip-writes]
        [--smoke] [--reuse-services] [--json FILE]

Everything runs in databases of its own, dropped after: in a PostgreSQL it starts (a temporary
home, a free port, like the test session) and stops, or with ``--reuse-services`` in the
configured, running one. Timings are only as good as the machine is quiet: the load average is
printed before and after the panels.

1. **Seeds** a database at revision 0002 with ``--days`` days of one-minute windows ending now,
   generated in SQL (``generate_series``), in time order as the Spark job writes them:
   ``--users-per-minute`` user_edit_counts rows per minute (a few thousand heavy editors and bots,
   a long tail of about a million occasional ones in ten-minute sessions; about 1,000 edits a
   minute, as Wikimedia's stream carries), ``--wikis-per-minute`` wiki_activity rows per minute
   (five big wikis, ~900 small ones), and a pipeline_batches row every 30 seconds.
2. **Migrates** it to head: revision 0003 builds the rollups from that data (the upgrade an
   existing installation goes through); then ``VACUUM ANALYZE`` (autovacuum's job in production).
3. **Measures each panel** as the page runs it — the uncached query functions of
   :mod:`dashboards.queries`, one after the other — for every range at ``--samples`` moments
   spread over the last day (every alignment of the span's edges), with and without filters;
   prints p50 / p95 / max per panel and range. The figure of a panel is its worst p95 over its
   ranges and filters. Goal: p95 <= 50 ms.
4. **Measures the write cost** of the rollups, as ratios of interleaved rounds
   (tests/benchmarks/method.py), each side timed from its first statement to its commit:
   the Spark sink's upsert of one live-size micro-batch with the rollup triggers against the
   same upsert with the triggers disabled; ``--rows`` user rows into empty tables, the sink's
   upsert against ``COPY`` into the same table, both with the rollup triggers, then both without
   (disabled); and, once, the retention deleting the oldest hour.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

from alembic import command  # noqa: E402
from app.config import Settings  # noqa: E402
from app.config.clients import libpq_params  # noqa: E402
from dashboards import database, queries, view  # noqa: E402
from dashboards.view import Filters, Span  # noqa: E402
from infra.migrations import alembic_config  # noqa: E402
from infra.stack import Stack  # noqa: E402
from spark.retention import delete_expired  # noqa: E402
from spark.sink import BatchRows, PostgresSink  # noqa: E402
from tests.benchmarks.method import (  # noqa: E402
    Goal,
    Report,
    add_arguments,
    add_sizes,
    fill_sizes,
    interleaved,
    percentile,
)
from tests.benchmarks.services import postgres, run  # noqa: E402
from tests.harness import scratch_database  # noqa: E402

GOAL_MS = 50.0
ROUNDS, SMOKE_ROUNDS = 5, 2
#: The sizes at full size, and with --smoke: one day of a thin stream, a few samples, a small
#: bulk write (seconds, not minutes). What the command line gives wins.
FULL = {
    "days": 30,
    "users_per_minute": 480,
    "wikis_per_minute": 150,
    "samples": 20,
    "rows": 100_000,
}
SMOKE = {"days": 1, "users_per_minute": 20, "wikis_per_minute": 10, "samples": 2, "rows": 2_000}


def say(text: str) -> None:
    print(text, flush=True)


# ---- 1. data -----------------------------------------------------------------------------------

# Per minute m and slot k: slots below 30 % are heavy editors (3,000 names, skewed: the first
# ones edit every minute; a third are bots), the rest occasional editors from a million names,
# each keeping a slot for a ten-minute session.
SEED_USERS = """
INSERT INTO user_edit_counts (window_start, window_end, user_name, edit_count)
SELECT ws, ws + interval '1 minute', name, sum(n)
FROM (
    SELECT %(base)s::timestamptz + make_interval(mins => m) AS ws,
           CASE WHEN k < %(heavy)s
                THEN 'Editor' || r || CASE WHEN r %% 3 = 0 THEN 'Bot' ELSE '' END
                ELSE 'User ' || ((hashint8(k::bigint * 1000003 + (m + k * 7) / 10)
                                  & 2147483647) %% 1000000)
           END AS name,
           CASE WHEN k < %(heavy)s
                THEN 1 + floor(12 * power(((hashint8(m::bigint * 7919 + k) & 2147483647)
                                           / 2147483648.0), 4))::int
                ELSE 1 + (hashint8(m::bigint * 31 + k) & 1)
           END AS n
    FROM generate_series(%(first)s, %(last)s) AS m,
         generate_series(0, %(slots)s - 1) AS k,
         LATERAL (SELECT floor(3000 * power(((hashint8(m::bigint * 1000 + k) & 2147483647)
                                              / 2147483648.0), 3))::int AS r) AS heavy
) AS picked
GROUP BY ws, name
ORDER BY ws, name
"""

SEED_WIKIS = """
INSERT INTO wiki_activity (window_start, window_end, wiki, edits, new_pages, bot_edits,
    anonymous_edits, bytes_added, bytes_removed, events)
SELECT ws, ws + interval '1 minute', wiki, e, e / 20, b, least(a, e - b), e * 180, e * 60,
       e + e / 2
FROM (
    SELECT ws, wiki, sum(e) AS e, sum(e * bots / 100) AS b, sum(e * anonymous / 100) AS a
    FROM (
        SELECT %(base)s::timestamptz + make_interval(mins => m) AS ws,
               CASE WHEN k < 5
                    THEN (ARRAY['wikidatawiki', 'commonswiki', 'enwiki', 'dewiki', 'frwiki'])[k + 1]
                    ELSE 'wiki' || floor(900 * power(((hashint8(m::bigint * 1000 + k)
                                                       & 2147483647) / 2147483648.0), 2))::int
               END AS wiki,
               CASE WHEN k < 5 THEN (ARRAY[300, 180, 90, 30, 20])[k + 1]
                    ELSE 1 + ((hashint8(m::bigint * 17 + k) & 2147483647) %% 4)
               END AS e,
               (hashint8(m::bigint * 13 + k) & 2147483647) %% 80 AS bots,
               (hashint8(m::bigint * 11 + k) & 2147483647) %% 20 AS anonymous
        FROM generate_series(%(first)s, %(last)s) AS m, generate_series(0, %(slots)s - 1) AS k
    ) AS picked
    GROUP BY ws, wiki
) AS summed
ORDER BY ws, wiki
"""

SEED_BATCHES = """
INSERT INTO pipeline_batches (query_name, batch_id, committed_at, user_edit_counts_rows,
    wiki_activity_rows, started_at, duration_ms, input_rows, rows_dropped_by_watermark,
    max_event_time, watermark)
SELECT 'wikipulse_aggregates', b, t, 900, 200, t - interval '2 seconds',
       500 + (hashint8(b) & 2047), 1500 + (hashint8(b + 1) & 1023),
       CASE WHEN hashint8(b + 2) & 63 = 0 THEN 1 + (hashint8(b + 3) & 7) ELSE 0 END,
       t - interval '1 second', t - interval '2 minutes'
FROM generate_series(%(first)s, %(last)s) AS b,
     LATERAL (SELECT %(base)s::timestamptz + b * interval '30 seconds' AS t) AS x
"""


def seed(settings: Settings, base: datetime, days: int, users: int, wikis: int) -> None:
    heavy = int(users * 0.3)
    started = time.perf_counter()
    for day in range(days):
        window = {"base": base, "first": day * 1440, "last": day * 1440 + 1439}
        run(settings, SEED_USERS, {**window, "slots": users, "heavy": heavy})
        run(settings, SEED_WIKIS, {**window, "slots": wikis})
        run(settings, SEED_BATCHES, {"base": base, "first": day * 2880, "last": day * 2880 + 2879})
        elapsed = time.perf_counter() - started
        say(f"  day {day + 1}/{days} seeded ({elapsed:.0f} s)")


def size_report(settings: Settings) -> None:
    rows = run(
        settings,
        """
        SELECT c.relname, c.reltuples::bigint, pg_size_pretty(pg_total_relation_size(c.oid))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'alembic_version'
        ORDER BY pg_total_relation_size(c.oid) DESC
        """,
    )
    for name, count, size in rows:
        say(f"  {name:22s} {count:>12,} rows {size:>10}")


# ---- 3. panels ---------------------------------------------------------------------------------

WIKI_FILTER = ("enwiki", "dewiki")


def panels(engine: Any, heavy_user: str, tail_user: str) -> dict[str, Callable[..., Any]]:
    """Each panel as the page runs it: its queries, one after the other."""

    def health(span: Span, now: datetime, filtered: bool) -> None:
        queries.bounds(engine)
        queries.pipeline_health(engine, span=span)

    def kpis(span: Span, now: datetime, filtered: bool) -> None:
        wikis = WIKI_FILTER if filtered else ()
        minute = view.last_complete_minute(span, now)
        queries.activity(engine, span=span, wikis=wikis)
        queries.activity(engine, span=minute, wikis=wikis)
        queries.activity(engine, span=minute.previous(), wikis=wikis)
        queries.active_editors(engine, span=span)
        queries.activity(engine, span=span.previous(), wikis=wikis)
        queries.active_editors(engine, span=span.previous())

    def timeline(span: Span, now: datetime, filtered: bool) -> None:
        queries.timeline(engine, span=span, wikis=WIKI_FILTER if filtered else ())

    def contributors(span: Span, now: datetime, filtered: bool) -> None:
        queries.top_contributors(engine, span=span, bots=not filtered)
        queries.activity(engine, span=span)

    def top_wikis(span: Span, now: datetime, filtered: bool) -> None:
        queries.top_wikis(
            engine, span=span, wikis=WIKI_FILTER if filtered else (), bots=not filtered
        )

    def lookup(span: Span, now: datetime, filtered: bool) -> None:
        queries.user_history(engine, span=span, user=tail_user if filtered else heavy_user)

    def wiki_list(span: Span, now: datetime, filtered: bool) -> None:
        queries.wikis(engine)

    return {
        "pipeline health": health,
        "KPIs": kpis,
        "timeline": timeline,
        "top contributors": contributors,
        "top wikis": top_wikis,
        "user lookup": lookup,
        "wiki filter options": wiki_list,
    }


def measure_panels(settings: Settings, end: datetime, samples: int) -> list[dict[str, Any]]:
    """p50 / p95 / max in milliseconds of each panel, filter and range."""
    engine = database.make_engine(settings.postgres)
    [(heavy,)] = run(settings, "SELECT user_name FROM user_edit_rollup WHERE grain = 'day' "
                               "ORDER BY edits DESC LIMIT 1")  # fmt: skip
    [(tail,)] = run(settings, "SELECT user_name FROM user_edit_counts WHERE user_name LIKE "
                              "'User %%' ORDER BY window_start DESC LIMIT 1")  # fmt: skip
    oldest = queries.bounds(engine).oldest
    rng = random.Random(42)
    moments = [end - timedelta(seconds=rng.uniform(0, 86_400)) for _ in range(samples)]
    yesterday = (end - timedelta(days=1)).date()
    choices = [
        *(Filters(range=name) for name in view.LIVE_RANGES),
        Filters(range="all"),
        Filters(range="custom", custom_from=yesterday - timedelta(days=2), custom_to=yesterday),
    ]
    results = []
    for name, panel in panels(engine, heavy, tail).items():
        for filtered in (False, True):
            if name in ("pipeline health", "wiki filter options") and filtered:
                continue
            for choice in choices:
                timings = []
                for moment in [moments[0], *moments]:  # the first run warms the plans
                    span = view.resolve(choice, now=moment, oldest=oldest)
                    assert span is not None
                    started = time.perf_counter()
                    panel(span, moment, filtered)
                    timings.append((time.perf_counter() - started) * 1000)
                timings = timings[1:]
                results.append(
                    {
                        "panel": name,
                        "filtered": filtered,
                        "range": choice.range if choice.range != "custom" else "custom 3 d",
                        "p50": statistics.median(timings),
                        "p95": percentile(timings, 0.95),
                        "max": max(timings),
                    }
                )
    engine.dispose()
    return results


def report_panels(report: Report, results: list[dict[str, Any]], days: int) -> None:
    say(f"  {'panel':22s} {'':9s} {'range':11s} {'p50':>7s} {'p95':>7s} {'max':>7s}")
    for row in results:
        flag = "" if row["p95"] <= GOAL_MS else "  <-- over the goal"
        say(
            f"  {row['panel']:22s} {'filtered' if row['filtered'] else '':9s} {row['range']:11s} "
            f"{row['p50']:7.1f} {row['p95']:7.1f} {row['max']:7.1f}{flag}"
        )
    for name in dict.fromkeys(row["panel"] for row in results):
        rows = [row for row in results if row["panel"] == name]
        worst = max(rows, key=lambda row: row["p95"])
        report.add(
            f"panels.{name.replace(' ', '_').lower()}.p95",
            f"dashboard panel '{name}': p95 on {days} day{'s' if days != 1 else ''} of "
            "aggregates (worst range)",
            worst["p95"],
            "ms",
            goal=Goal(GOAL_MS, at_least=False),
            worst_range=worst["range"],
            worst_filtered=worst["filtered"],
            ranges=rows,
        )


# ---- 4. writes ---------------------------------------------------------------------------------


def upsert(settings: Settings, rows: BatchRows, batch_id: int) -> float:
    """The Spark sink's write of one batch: seconds from its first statement to its commit."""
    sink = PostgresSink(settings.postgres, query_name="bench")
    try:
        sink.forget_batches()  # connects outside the measurement
        started = time.perf_counter()
        sink.write_batch(batch_id, rows)
        return time.perf_counter() - started
    finally:
        sink.close()


def copy_user_rows(settings: Settings, rows: list[tuple[Any, ...]]) -> float:
    """COPY into user_edit_counts itself (its triggers fire as for the upsert): seconds from the
    COPY to its commit."""
    buffer = io.StringIO()
    for start, end, name, count in rows:
        buffer.write(f"{start.isoformat()}\t{end.isoformat()}\t{name}\t{count}\n")
    buffer.seek(0)
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    try:
        started = time.perf_counter()
        with connection, connection.cursor() as cursor:
            cursor.copy_expert(
                "COPY user_edit_counts (window_start, window_end, user_name, edit_count) "
                "FROM STDIN",
                buffer,
            )
        return time.perf_counter() - started
    finally:
        connection.close()


def emptied(settings: Settings) -> None:
    """Every table of the schema empty again (untimed, between sides); a statement per table:
    at head, truncating a base table truncates its rollups too (a trigger); CASCADE: the alerts'
    notifications and deliveries reference them."""
    tables = run(
        settings,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'alembic_version'",
    )
    run(
        settings,
        sql.SQL("; ").join(
            sql.SQL("TRUNCATE {} CASCADE").format(sql.Identifier(t)) for (t,) in tables
        ),
    )


def triggers(settings: Settings, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    run(settings, f"ALTER TABLE user_edit_counts {verb} TRIGGER USER; "
                  f"ALTER TABLE wiki_activity {verb} TRIGGER USER")  # fmt: skip


def bench_live_batch(report: Report, settings: Settings, end: datetime, rounds: int) -> None:
    """A live micro-batch: the last minute's windows again (counts + 1) and a new minute's."""
    last = view.floor(end, "minute") - timedelta(minutes=1)
    minutes = iter(range(1, 2 * rounds + 1))
    batch_ids = iter(range(10_000_000, 10_000_000 + 2 * rounds))

    def live_batch() -> BatchRows:
        users = run(
            settings,
            "SELECT window_start, window_end, user_name, edit_count + 1 FROM user_edit_counts "
            "WHERE window_start = %s",
            (last,),
        )
        wikis = run(
            settings,
            "SELECT window_start, window_end, wiki, edits + 1, new_pages, bot_edits, "
            "anonymous_edits, bytes_added, bytes_removed, events + 1 FROM wiki_activity "
            "WHERE window_start = %s",
            (last,),
        )
        shift = timedelta(minutes=next(minutes))
        return BatchRows(
            users + [(s + shift, e + shift, n, c) for s, e, n, c in users],
            wikis + [(s + shift, e + shift, *rest) for s, e, *rest in wikis],
        )

    def without_rollups() -> float:
        rows = live_batch()
        triggers(settings, enabled=False)
        try:
            return upsert(settings, rows, next(batch_ids))
        finally:
            triggers(settings, enabled=True)

    def with_rollups() -> float:
        return upsert(settings, live_batch(), next(batch_ids))

    [(users, wikis)] = run(
        settings,
        "SELECT (SELECT count(*) FROM user_edit_counts WHERE window_start = %(m)s), "
        "(SELECT count(*) FROM wiki_activity WHERE window_start = %(m)s)",
        {"m": last},
    )
    comparison = interleaved(2 * (users + wikis), without_rollups, with_rollups, rounds=rounds)
    report.ratio(
        "writes.live_batch.ratio",
        f"a live micro-batch's upsert ({comparison.units:,} rows, half updates) with the "
        "rollup triggers vs without",
        comparison,
        unit_name="rows",
    )


def bench_bulk(
    report: Report, stack: Stack, environ: dict[str, str], count: int, rounds: int
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = BatchRows(
        [
            (start + timedelta(minutes=i // 500), start + timedelta(minutes=i // 500 + 1),
             f"user{i % 500}", i % 7 + 1)
            for i in range(count)
        ],
        [],
    )  # fmt: skip
    with scratch_database(stack, environ, "head") as settings:

        def copy() -> float:
            emptied(settings)
            return copy_user_rows(settings, rows.user_edit_counts)

        def upserted() -> float:
            emptied(settings)
            return upsert(settings, rows, 0)

        for rollups in (True, False):
            triggers(settings, enabled=rollups)  # the same for both sides of the comparison
            comparison = interleaved(count, copy, upserted, rounds=rounds)
            report.ratio(
                f"writes.upsert_vs_copy.{'rollups' if rollups else 'plain'}",
                f"the sink's upsert of {count:,} user rows into empty tables vs COPY into the "
                f"same table, {'with' if rollups else 'without'} the rollup triggers",
                comparison,
                unit_name="rows",
            )


def bench_retention(report: Report, settings: Settings) -> None:
    [(oldest, newest)] = run(
        settings, "SELECT min(window_start), max(window_start) FROM user_edit_counts"
    )
    # The retention counts back from the newest window: this one reaches the oldest hour.
    started = time.perf_counter()
    deleted = delete_expired(
        settings.postgres, retention=newest - oldest - timedelta(hours=1), pause=0
    )
    elapsed = time.perf_counter() - started
    report.add(
        "writes.retention_hour",
        "retention deleting the oldest hour (rollups and sketches updated by the triggers)",
        elapsed,
        "s",
        deleted=deleted,
    )


# ---- main --------------------------------------------------------------------------------------


def seed_and_migrate(settings: Settings, end: datetime, args: argparse.Namespace) -> None:
    base = end - timedelta(days=args.days)
    say(
        f"\n1. seeding {args.days} days ({base:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC), "
        f"{args.users_per_minute} user slots and {args.wikis_per_minute} wiki slots a minute"
    )
    started = time.perf_counter()
    seed(settings, base, args.days, args.users_per_minute, args.wikis_per_minute)
    seeding = time.perf_counter() - started

    say("\n2. alembic upgrade head (revision 0003 builds the rollups from the data)")
    started = time.perf_counter()
    command.upgrade(alembic_config(settings), "head")
    migrating = time.perf_counter() - started
    started = time.perf_counter()
    run(settings, "VACUUM ANALYZE", autocommit=True)
    vacuuming = time.perf_counter() - started
    say(f"  seeding {seeding:.0f} s, migration {migrating:.0f} s, VACUUM {vacuuming:.0f} s")
    size_report(settings)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sizes(parser, FULL)
    parser.add_argument("--skip-writes", action="store_true", help="skip part 4")
    parser.add_argument(
        "--reuse-services",
        action="store_true",
        help="use the configured, running PostgreSQL (databases of its own, dropped after) "
        "instead of starting one",
    )
    add_arguments(parser)
    args = parser.parse_args()
    fill_sizes(args, FULL, SMOKE)
    return args


def main() -> int:
    args = arguments()
    report = Report("bench_dashboard", smoke=args.smoke)
    rounds = SMOKE_ROUNDS if args.smoke else ROUNDS
    with postgres(args.reuse_services) as (stack, environ):
        with scratch_database(stack, environ, "0002") as settings:
            end = view.live_end(datetime.now(UTC))
            seed_and_migrate(settings, end, args)

            say(f"\n3. panels: {args.samples} moments over the last day, each range; ms")
            say(f"  load average before: {os.getloadavg()[0]:.2f} (other processes skew timings)")
            results = measure_panels(settings, end, args.samples)
            report_panels(report, results, args.days)
            say(f"  load average after: {os.getloadavg()[0]:.2f}")

            if not args.skip_writes:
                say(f"\n4. write cost of the rollups, {rounds} interleaved rounds")
                bench_live_batch(report, settings, end, rounds)
                bench_retention(report, settings)
        if not args.skip_writes:
            bench_bulk(report, stack, environ, args.rows, rounds)
    report.finish(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
