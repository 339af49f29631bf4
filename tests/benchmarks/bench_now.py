"""The "Now" view and the alert step on two days of page activity at live volume. Prints figures,
asserts nothing (not collected by pytest).

    .venv/bin/python tests/benchmarks/bench_now.py [--hours 48] [--edits-per-minute 1200]
        [--minutes 20] [--samples 20] [--smoke] [--reuse-services] [--json FILE]

Everything runs in a database of its own, dropped after: in a PostgreSQL it starts and stops,
or with ``--reuse-services`` in the configured, running one.

1. **Seeds** a database at head with ``--hours`` of ``page_activity`` ending now (its retention
   is 48 hours), generated in SQL: ``--edits-per-minute`` edits a minute over 40 wikis (a few
   big ones), their pages drawn from 300,000 titles with a few very busy ones, their editors
   from 100,000 people and 50 bots (a fifth of the edits); ``wiki_activity`` as the sums per
   wiki and minute; and the alerts of those hours (wiki episodes and trending pages, a few
   open).
2. **The alert step** (spark/alerts.py) as the Spark job runs it after a batch, evaluating
   ``--minutes`` closed minutes (every wiki, and one ``trending_pages()`` call per minute), timed
   from its first statement to its commit: with migration 0009's ``trending_pages()`` against
   0008's (swapped in with ``CREATE OR REPLACE`` between the sides; the step's episodes and
   progress reset before each), in interleaved rounds. Both sides must open the same alerts.
3. **The Now view's panels** as the page runs them: the trending pages (queries.trending_pages
   with the ``alerts.trending`` defaults, and filtered to two wikis) and the alerts (each live
   range): p50 / p95 / max of ``--samples`` runs after one that warms the plans. Goal, as for the
   other panels: p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from alembic.script import ScriptDirectory  # noqa: E402

from app.config import Settings  # noqa: E402
from dashboards import database, queries, view  # noqa: E402
from dashboards.view import Filters  # noqa: E402
from infra.migrations import alembic_config  # noqa: E402
from spark.alerts import DETECTOR, AlertStep  # noqa: E402
from spark.sink import PostgresSink  # noqa: E402
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
FULL = {"hours": 48, "edits_per_minute": 1200, "minutes": 20, "samples": 20}
SMOKE = {"hours": 2, "edits_per_minute": 60, "minutes": 2, "samples": 2}
WIKI_FILTER = ("wiki00", "wiki01")


def say(text: str) -> None:
    print(text, flush=True)


# ---- 1. data -----------------------------------------------------------------------------------

# Per minute m and slot k, three uniform draws from hashes: the wiki (cubed: wiki00 is the
# busiest), the page (to the 4th: a few pages are edited all day) and the editor (below 0.2 a
# bot, else a person, squared: some edit a lot).
SEED_PAGES = """
INSERT INTO page_activity (window_start, window_end, wiki, namespace, title, server_name, edits,
    editors, bot_edits, anonymous_edits, bytes_added, bytes_removed, new_page, editor_names,
    bot_names)
SELECT ws, ws + interval '1 minute', wiki, 0, title, wiki || '.example.org', count(*),
       count(DISTINCT name), count(*) FILTER (WHERE bot), 0, 120 * count(*), 40 * count(*),
       false, array_agg(DISTINCT name ORDER BY name),
       coalesce(array_agg(DISTINCT name ORDER BY name) FILTER (WHERE bot), '{}')
FROM (
    SELECT %(base)s::timestamptz + make_interval(mins => m) AS ws,
           'wiki' || lpad(floor(40 * power(w, 3))::int::text, 2, '0') AS wiki,
           'Page ' || floor(300000 * power(p, 4))::int AS title,
           CASE WHEN e < 0.2 THEN 'Bot ' || floor(250 * e)::int
                ELSE 'User ' || floor(100000 * power((e - 0.2) / 0.8, 2))::int END AS name,
           e < 0.2 AS bot
    FROM generate_series(%(first)s, %(last)s) AS m,
         generate_series(0, %(slots)s - 1) AS k,
         LATERAL (SELECT (hashint8(m::bigint * 1000003 + k) & 2147483647) / 2147483648.0 AS w,
                         (hashint8(m::bigint * 7919 + k * 31 + 1) & 2147483647)
                             / 2147483648.0 AS p,
                         (hashint8(m::bigint * 104729 + k * 17 + 2) & 2147483647)
                             / 2147483648.0 AS e) AS draws
) AS edits
GROUP BY ws, wiki, title
ORDER BY ws, wiki, title
"""

SEED_WIKIS = """
INSERT INTO wiki_activity (window_start, window_end, wiki, edits, new_pages, bot_edits,
    anonymous_edits, bytes_added, bytes_removed, events)
SELECT window_start, window_end, wiki, sum(edits), 0, sum(bot_edits), 0, sum(bytes_added),
       sum(bytes_removed), sum(edits)
FROM page_activity
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

# An episode an hour for each of the three busiest wikis, ten trending pages an hour; the newest
# two hours' page episodes still open.
SEED_ALERTS = """
INSERT INTO alerts (kind, wiki, namespace, title, server_name, window_start, window_end,
    detected_window_end, observed, expected, deviation, score, opened_at, updated_at, closed_at)
SELECT kind, wiki, namespace, title, server_name, start, start + interval '5 minutes',
       start + interval '2 minutes', 100, 20, CASE WHEN title IS NULL THEN 5 END, 16, now(),
       now(), CASE WHEN title IS NULL OR start < %(end)s - interval '2 hours' THEN now() END
FROM (
    SELECT (ARRAY['wiki_surge', 'wiki_drop', 'wiki_surge'])[w + 1] AS kind,
           'wiki0' || w AS wiki, NULL::int AS namespace, NULL AS title, NULL AS server_name,
           %(base)s::timestamptz + make_interval(hours => h, mins => 7 * w) AS start
    FROM generate_series(0, %(hours)s - 1) AS h, generate_series(0, 2) AS w
    UNION ALL
    SELECT 'page_trending', 'wiki' || lpad((i %% 40)::text, 2, '0'), 0,
           'Trending ' || h || '-' || i, 'wiki' || lpad((i %% 40)::text, 2, '0') || '.example.org',
           %(base)s::timestamptz + make_interval(hours => h, mins => 6 * i)
    FROM generate_series(0, %(hours)s - 1) AS h, generate_series(0, 9) AS i
) AS episodes
"""


def seed(settings: Settings, end: datetime, hours: int, edits_per_minute: int) -> None:
    base = end - timedelta(hours=hours)
    say(f"\n1. seeding {hours} h of page activity ({base:%Y-%m-%d %H:%M} – {end:%H:%M} UTC), "
        f"{edits_per_minute:,} edits a minute")  # fmt: skip
    started = time.perf_counter()
    for hour in range(hours):
        window = {"base": base, "first": hour * 60, "last": hour * 60 + 59}
        run(settings, SEED_PAGES, {**window, "slots": edits_per_minute})
        if (hour + 1) % 6 == 0 or hour + 1 == hours:
            say(f"  hour {hour + 1}/{hours} seeded ({time.perf_counter() - started:.0f} s)")
    run(settings, SEED_WIKIS)
    run(settings, SEED_ALERTS, {"base": base, "end": end, "hours": hours})
    run(settings, "VACUUM ANALYZE", autocommit=True)
    [(rows, pages, size)] = run(
        settings,
        "SELECT count(*), count(DISTINCT (wiki, title)), "
        "pg_size_pretty(pg_total_relation_size('page_activity')) FROM page_activity",
    )
    say(f"  page_activity: {rows:,} rows, {pages:,} pages, {size} "
        f"({time.perf_counter() - started:.0f} s)")  # fmt: skip


# ---- 2. the alert step -------------------------------------------------------------------------


def trending_pages_of(settings: Settings, revision: str) -> str:
    """The ``CREATE FUNCTION trending_pages`` of a migration, from alembic's script directory."""
    scripts = ScriptDirectory.from_config(alembic_config(settings))
    script = scripts.get_revision(revision)
    assert script is not None, revision
    function_sql: str = script.module.TRENDING_PAGES
    return function_sql


def replacing(function_sql: str) -> str:
    """A migration's ``CREATE FUNCTION`` as ``CREATE OR REPLACE``: same signature, new body."""
    return function_sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


class StepSide:
    """One side of the comparison: the step over the same minutes with one trending_pages()."""

    def __init__(self, settings: Settings, function_sql: str, first: datetime, minutes: int,
                 seeded_through: int) -> None:  # fmt: skip
        self.settings = settings
        self.function_sql = replacing(function_sql)
        self.first = first
        self.minutes = minutes
        self.seeded_through = seeded_through
        self.opened: list[int] = []

    def __call__(self) -> float:
        settings = self.settings
        window = settings.spark.windowing.duration
        delay = settings.spark.windowing.watermark + window
        run(settings, self.function_sql)
        # The episodes the step opened last time gone, its progress just before the first minute,
        # the newest minute it has seen such that the --minutes after it are closed.
        run(settings, "DELETE FROM alerts WHERE id > %s", (self.seeded_through,))
        run(
            settings,
            "INSERT INTO alert_progress (detector, evaluated_through, newest_minute) "
            "VALUES (%(d)s, %(through)s, %(newest)s) ON CONFLICT (detector) DO UPDATE SET "
            "evaluated_through = %(through)s, newest_minute = %(newest)s",
            {"d": DETECTOR, "through": self.first - window,
             "newest": self.first + (self.minutes - 1) * window + delay},
        )  # fmt: skip
        sink = PostgresSink(settings.postgres, query_name="bench")
        try:
            sink.forget_batches()  # connects outside the measurement
            started = time.perf_counter()
            report = AlertStep(settings, sink).run()
            elapsed = time.perf_counter() - started
        finally:
            sink.close()
        if report.minutes != self.minutes:
            raise RuntimeError(f"the step evaluated {report.minutes} minutes, not {self.minutes}")
        self.opened.append(report.opened)
        return elapsed


def bench_step(
    report: Report, settings: Settings, end: datetime, minutes: int, rounds: int
) -> None:
    first = view.floor(end, "minute") - timedelta(hours=1)
    [(seeded_through,)] = run(settings, "SELECT coalesce(max(id), 0) FROM alerts")
    before = StepSide(settings, trending_pages_of(settings, "0008"), first,
                      minutes, seeded_through)  # fmt: skip
    after = StepSide(settings, trending_pages_of(settings, "0009"), first,
                     minutes, seeded_through)  # fmt: skip
    say(f"\n2. the alert step over {minutes} closed minutes from {first:%H:%M}: 0008's "
        f"trending_pages() vs 0009's, {rounds} interleaved rounds")  # fmt: skip

    def progress(index: int, baseline: float, candidate: float) -> None:
        say(f"  round {index}: 0008 {baseline:.2f} s, 0009 {candidate:.2f} s")

    try:
        comparison = interleaved(minutes, before, after, rounds=rounds, on_round=progress)
    finally:
        run(settings, replacing(trending_pages_of(settings, "0009")))
    same = before.opened == after.opened
    report.ratio(
        "step.ratio",
        f"the alert step over {minutes} closed minutes, 0009's trending_pages() vs 0008's",
        comparison,
        unit_name="minutes",
        note=(
            f"{'the same' if same else 'DIFFERENT'} alerts opened by both sides "
            f"({after.opened[0]} a round); the step checks every wiki and calls "
            "trending_pages() once a minute"
        ),
    )
    for key, name, side in (("before", "0008", comparison.baseline),
                            ("after", "0009", comparison.candidate)):  # fmt: skip
        report.add(
            f"step.seconds_per_minute.{key}",
            f"the alert step per closed minute, {name}'s trending_pages() (median round)",
            statistics.median(side) / minutes,
            "s",
        )


# ---- 3. panels ---------------------------------------------------------------------------------


def bench_panels(report: Report, settings: Settings, end: datetime, samples: int) -> None:
    engine = database.make_engine(settings.postgres)
    trending = settings.alerts.trending
    [(oldest,)] = run(settings, "SELECT min(window_start) FROM wiki_activity")
    panels: dict[tuple[str, str], Callable[[], Any]] = {
        ("trending pages", ""): lambda: queries.trending_pages(engine, trending),
        ("trending pages", "filtered"): lambda: queries.trending_pages(
            engine, trending, wikis=WIKI_FILTER
        ),
    }
    for name in view.LIVE_RANGES:
        span = view.resolve(Filters(range=name), now=end, oldest=oldest)
        assert span is not None
        panels[("alerts", name)] = lambda span=span: queries.alerts(engine, span=span)
    say(f"\n3. panels, {samples} runs each after a warm-up; ms")
    say(f"  {'panel':16s} {'':9s} {'p50':>7s} {'p95':>7s} {'max':>7s}")
    worst: dict[str, tuple[float, str]] = {}
    for (name, variant), panel in panels.items():
        panel()  # warms the plans
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            panel()
            timings.append((time.perf_counter() - started) * 1000)
        p95 = percentile(timings, 0.95)
        say(f"  {name:16s} {variant:9s} {statistics.median(timings):7.1f} {p95:7.1f} "
            f"{max(timings):7.1f}")  # fmt: skip
        if p95 >= worst.get(name, (-1.0, ""))[0]:
            worst[name] = (p95, variant)
    [(rows,)] = run(settings, "SELECT count(*) FROM trending_pages(%s)", (end,))
    for name, (p95, variant) in worst.items():
        report.add(
            f"panels.{name.replace(' ', '_')}.p95",
            f"dashboard panel '{name}': p95 (worst of its variants)",
            p95,
            "ms",
            goal=Goal(GOAL_MS, at_least=False),
            note=f"worst: {variant or 'unfiltered'}"
            + (f"; {rows} pages trending at the end" if name == "trending pages" else ""),
        )
    engine.dispose()


# ---- main --------------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sizes(parser, FULL)
    parser.add_argument(
        "--reuse-services",
        action="store_true",
        help="use the configured, running PostgreSQL (a database of its own, dropped after)",
    )
    add_arguments(parser)
    args = parser.parse_args()
    fill_sizes(args, FULL, SMOKE)
    return args


def main() -> int:
    args = arguments()
    report = Report("bench_now", smoke=args.smoke)
    rounds = SMOKE_ROUNDS if args.smoke else ROUNDS
    end = view.floor(datetime.now(UTC), "minute")
    with (
        postgres(args.reuse_services) as (stack, environ),
        scratch_database(stack, environ, "head") as settings,
    ):
        seed(settings, end, args.hours, args.edits_per_minute)
        bench_step(report, settings, end, args.minutes, rounds)
        bench_panels(report, settings, end, args.samples)
    report.add(
        "data",
        "page_activity seeded",
        args.hours,
        "h",
        note=f"{args.edits_per_minute:,} edits a minute over 40 wikis",
    )
    report.finish(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
