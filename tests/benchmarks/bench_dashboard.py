"""Benchmark of the dashboard's queries on 30 days of aggregates at live volume (prints figures;
not a test, not collected by pytest).

    .venv/bin/python tests/benchmarks/bench_dashboard.py [--days 30] [--users-per-minute 480]
        [--wikis-per-minute 150] [--samples 20] [--keep | --reuse HOME]

``--keep`` leaves the seeded database (and its PostgreSQL) in place and prints how to measure
it again with ``--reuse HOME`` (part 3 only: part 4 changes the data); ``--reuse HOME --drop``
measures parts 3 and 4, then deletes it.
Timings are only as good as the machine is quiet: the load average of other processes is
printed before and after the measurements.

Starts its own PostgreSQL (in /tmp, on a free port, like the test session) and:

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
   spread over the last day (every alignment of the span's edges), and prints p50 / p95 / max
   per panel. Target: p95 <= 50 ms.
4. **Measures the write cost** of the rollups: the Spark sink's upsert of one live-size
   micro-batch with and without the triggers, 100k rows into empty tables (at 0002, at head,
   and a plain COPY), and the retention deleting the oldest hour.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

from alembic import command  # noqa: E402
from app.config import Settings, load_settings  # noqa: E402
from app.config.clients import libpq_params  # noqa: E402
from dashboards import queries, view  # noqa: E402
from dashboards.view import Filters, Span  # noqa: E402
from infra.migrations import alembic_config  # noqa: E402
from infra.stack import Stack  # noqa: E402
from tests.conftest import stack_environment  # noqa: E402

TARGET_MS = 50.0


def say(text: str) -> None:
    print(text, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ---- services ----------------------------------------------------------------------------------


def start_postgres(reuse: Path | None) -> tuple[Stack, dict[str, str]]:
    if reuse is not None:
        environ = json.loads((reuse / "bench.json").read_text())
    else:
        home = Path(tempfile.mkdtemp(prefix="wikipulse-bench-", dir="/tmp"))
        environ = stack_environment(home)
    stack = Stack(load_settings(environ=environ))
    stack.postgres.start()
    return stack, environ


def new_database(stack: Stack, environ: dict[str, str], revision: str) -> Settings:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with stack.postgres.admin() as cursor:
        cursor.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(stack.settings.postgres.user)
            )
        )
    settings = load_settings(environ={**environ, "POSTGRES_DATABASE": name})
    command.upgrade(alembic_config(settings), revision)
    return settings


def run(settings: Settings, statement: str, params: Any = None, *, autocommit: bool = False) -> Any:
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    connection.autocommit = autocommit
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            result = cursor.fetchall() if cursor.description else cursor.rowcount
        if not autocommit:
            connection.commit()
        return result
    finally:
        connection.close()


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


def measure_panels(settings: Settings, end: datetime, samples: int) -> list[tuple[Any, ...]]:
    engine = queries.make_engine(settings.postgres)
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
                label = choice.range if choice.range != "custom" else "custom 3 d"
                timings = []
                for moment in [moments[0], *moments]:  # the first run warms the plans
                    span = view.resolve(choice, now=moment, oldest=oldest)
                    assert span is not None
                    started = time.perf_counter()
                    panel(span, moment, filtered)
                    timings.append((time.perf_counter() - started) * 1000)
                timings = timings[1:]
                results.append(
                    (name, "filtered" if filtered else "", label,
                     statistics.median(timings), percentile(timings, 0.95), max(timings))
                )  # fmt: skip
    engine.dispose()
    return results


# ---- 4. writes ---------------------------------------------------------------------------------


def write_costs(stack: Stack, environ: dict[str, str], settings: Settings, end: datetime) -> None:
    from spark.retention import delete_expired
    from spark.sink import BatchRows, PostgresSink

    # one live micro-batch: the running minute's windows again (counts + 1) and the next one's
    last = view.floor(end, "minute") - timedelta(minutes=1)

    def live_batch(minute: datetime) -> BatchRows:
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
        shift = minute - last
        return BatchRows(
            users + [(s + shift, e + shift, n, c) for s, e, n, c in users],
            wikis + [(s + shift, e + shift, *rest) for s, e, *rest in wikis],
        )

    def upsert(target: Settings, rows: BatchRows, batch_id: int) -> float:
        sink = PostgresSink(target.postgres, query_name="bench")
        try:
            sink.forget_batches()  # connects outside the measurement
            started = time.perf_counter()
            sink.write_batch(batch_id, rows)
            return time.perf_counter() - started
        finally:
            sink.close()

    say("\n4. write cost of the rollups")
    with_triggers, without = [], []
    for attempt in range(3):
        rows = live_batch(last + timedelta(minutes=1 + 2 * attempt))
        with_triggers.append(upsert(settings, rows, 10_000_000 + 2 * attempt))
        run(settings, "ALTER TABLE user_edit_counts DISABLE TRIGGER USER; "
                      "ALTER TABLE wiki_activity DISABLE TRIGGER USER")  # fmt: skip
        try:
            rows = live_batch(last + timedelta(minutes=2 + 2 * attempt))
            without.append(upsert(settings, rows, 10_000_001 + 2 * attempt))
        finally:
            run(settings, "ALTER TABLE user_edit_counts ENABLE TRIGGER USER; "
                          "ALTER TABLE wiki_activity ENABLE TRIGGER USER")  # fmt: skip
    count = len(rows.user_edit_counts) + len(rows.wiki_activity)
    say(
        f"  a live micro-batch ({count:,} rows, half updates): "
        f"{statistics.median(with_triggers) * 1000:.0f} ms with the rollups, "
        f"{statistics.median(without) * 1000:.0f} ms without (triggers disabled)"
    )

    start = datetime(2026, 1, 1, tzinfo=UTC)
    synthetic = BatchRows(
        [
            (
                start + timedelta(minutes=i // 500),
                start + timedelta(minutes=i // 500 + 1),
                f"user{i % 500}",
                i % 7 + 1,
            )
            for i in range(100_000)
        ],
        [],
    )  # fmt: skip  (bench_spark.py's synthetic rows)
    rates = {}
    for revision in ("0002", "head"):
        target = new_database(stack, environ, revision)
        rates[revision] = 100_000 / upsert(target, synthetic, 0)
        rates[f"{revision} COPY"] = 100_000 / copy_rows(target, synthetic.user_edit_counts)
    say(
        f"  100k user rows into empty tables: upsert {rates['head']:,.0f} rows/s at head "
        f"({rates['head'] / rates['head COPY']:.2f}x COPY {rates['head COPY']:,.0f}), "
        f"{rates['0002']:,.0f} rows/s at 0002 "
        f"({rates['0002'] / rates['0002 COPY']:.2f}x COPY {rates['0002 COPY']:,.0f})"
    )

    [(oldest, newest)] = run(
        settings, "SELECT min(window_start), max(window_start) FROM user_edit_counts"
    )
    # the retention counts back from the newest window: this one reaches the oldest hour
    started = time.perf_counter()
    deleted = delete_expired(
        settings.postgres, retention=newest - oldest - timedelta(hours=1), pause=0
    )
    elapsed = time.perf_counter() - started
    say(
        f"  retention, the oldest hour: {deleted} in {elapsed:.1f} s "
        "(rollups and sketches updated by the triggers)"
    )


def copy_rows(settings: Settings, rows: list[tuple[Any, ...]]) -> float:
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE copy_user_edit_counts (LIKE user_edit_counts "
                           "INCLUDING ALL)")  # fmt: skip
        buffer = io.StringIO()
        for start, end, name, count in rows:
            buffer.write(f"{start.isoformat()}\t{end.isoformat()}\t{name}\t{count}\n")
        buffer.seek(0)
        started = time.perf_counter()
        with connection, connection.cursor() as cursor:
            cursor.copy_expert(
                "COPY copy_user_edit_counts (window_start, window_end, user_name, edit_count) "
                "FROM STDIN",
                buffer,
            )
        return time.perf_counter() - started
    finally:
        connection.close()


# ---- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users-per-minute", type=int, default=480)
    parser.add_argument("--wikis-per-minute", type=int, default=150)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--skip-writes", action="store_true", help="skip part 4")
    parser.add_argument("--keep", action="store_true", help="keep the seeded database")
    parser.add_argument("--reuse", type=Path, help="measure the database --keep left in HOME")
    parser.add_argument(
        "--drop", action="store_true", help="with --reuse: measure (parts 3 and 4), then delete"
    )
    args = parser.parse_args()

    say(f"cores: {os.cpu_count()}")
    stack, environ = start_postgres(args.reuse)
    keep = args.keep or (args.reuse is not None and not args.drop)
    try:
        if args.reuse is None:
            settings = new_database(stack, environ, "0002")
            end = view.live_end(datetime.now(UTC))
            seed_and_migrate(settings, end, args)
            environ = {**environ, "POSTGRES_DATABASE": settings.postgres.database,
                       "BENCH_END": end.isoformat()}  # fmt: skip
            (stack.home.root / "bench.json").write_text(json.dumps(environ))
        settings = load_settings(environ={k: v for k, v in environ.items() if k != "BENCH_END"})
        end = datetime.fromisoformat(environ["BENCH_END"])

        say(f"\n3. panels: {args.samples} moments over the last day, each range; milliseconds")
        say(f"  load average before: {os.getloadavg()[0]:.2f} (other processes skew timings)")
        say(f"  {'panel':22s} {'':9s} {'range':11s} {'p50':>7s} {'p95':>7s} {'max':>7s}")
        results = measure_panels(settings, end, args.samples)
        for name, filtered, label, p50, p95, worst in results:
            flag = "" if p95 <= TARGET_MS else "  <-- over target"
            say(f"  {name:22s} {filtered:9s} {label:11s} {p50:7.1f} {p95:7.1f} {worst:7.1f}{flag}")
        over = [r for r in results if r[4] > TARGET_MS]
        worst_p95 = max(r[4] for r in results)
        say(
            f"  worst p95 {worst_p95:.1f} ms; {len(over)} of {len(results)} over "
            f"{TARGET_MS:.0f} ms (filtered: wikis {', '.join(WIKI_FILTER)} and no bots; "
            "user lookup: a heavy editor, filtered: an occasional one)"
        )
        say(f"  load average after: {os.getloadavg()[0]:.2f}")
        if args.skip_writes or keep:
            say("\n4. skipped (it changes the data: not with --skip-writes, --keep or --reuse)")
        else:
            write_costs(stack, environ, settings, end)
    finally:
        if keep:
            stack.postgres.stop()
            say(f"\nkept: {stack.home.root} (again: --reuse {stack.home.root}; "
                f"last time: --reuse {stack.home.root} --drop)")  # fmt: skip
        else:
            stack.down(purge=True)
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
