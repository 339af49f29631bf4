"""Benchmark of the Spark job: its backfill against a batch query, its sink's upserts against COPY.

    .venv/bin/python tests/benchmarks/bench_spark.py [--events 200000] [--rounds 5]
        [--recording FILE] [--smoke] [--reuse-services] [--json FILE]

**Dataset**: ``--events`` typed events (200,000; 2,000 with ``--smoke``) made from 5,000 events
of the synthetic stream (seed 7; or of ``--recording``), normalized, then copied with fresh ids
and spread over event time at 50 events/s ending now, each up to 5 s out of order (seed 11).
They are written once to a fresh typed topic as the worker writes it in a backfill: with the
schema headers, in transactions of 5,000.

Both figures are ratios of interleaved rounds (``tests/benchmarks/method.py``: baseline,
candidate, baseline, candidate …; ``--rounds``, 5 by default, 2 with ``--smoke``), each side
timed from the first input read to its output committed in PostgreSQL, each round on a fresh
database (a copy of a database migrated to head: the real tables, indexes and triggers):

1. **Backfill**: the job with ``availableNow`` (:func:`spark.job.run`: Kafka -> aggregation ->
   the sink's upserts, a fresh checkpoint per round) against the same aggregation
   (:func:`spark.job.aggregates`) run as a Spark batch query over the same topic in the same
   SparkSession, its rows collected to the driver and written by the same sink in one
   transaction. So both read, aggregate and write the same rows; what the job does on top (its
   state store and checkpoint, its ``pipeline_batches`` progress, starting and stopping a
   streaming query, a no-data batch if Spark runs one to advance the watermark) is what the
   ratio prices. Goal >= 0.8x. One round of each runs first, not counted: the first queries of
   a JVM load classes and compile.
2. **Upserts vs COPY**: the batch query's output rows (the aggregates of the events above)
   written by the job's sink (``INSERT ... ON CONFLICT`` in pages of 5,000, one transaction,
   with the batch's ``pipeline_batches`` row) against ``COPY`` of the same rows into the same
   tables (and the same ``pipeline_batches`` row, in one transaction). Both write into the empty
   tables of a fresh migrated database, so the statement-level rollup triggers of migrations
   0003 and 0005 run on both sides (COPY fires AFTER INSERT triggers with their transition
   tables). Timed from connecting to the commit. Goal >= 0.35x.

After every round the benchmark checks that both sides did the same work: the same number of
rows in each table (``page_activity`` included), every event counted once in ``wiki_activity``
and in the rollups, every page edit in ``page_activity_hourly``.

Without ``--reuse-services`` it starts its own PostgreSQL and Kafka (a temporary home, free
ports, like the test session); with it, it uses the running ones named by the configuration
(``KAFKA_BOOTSTRAP_SERVERS``, ``POSTGRES_*``, ``WIKIPULSE_HOME``). Either way its topic,
databases and checkpoints are its own and are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from psycopg2 import sql  # noqa: E402

from app.config import Settings, load_settings  # noqa: E402
from app.config.clients import aiokafka_options, libpq_params, producer_options  # noqa: E402
from app.contract import TYPED_HEADERS, WIKI_ACTIVITY_COUNTERS, RecentChange  # noqa: E402
from app.normalize import normalize  # noqa: E402
from app.normalize.batch import encode_typed  # noqa: E402
from app.normalize.service import MAX_BATCH_RECORDS  # noqa: E402
from infra.migrations import migrate  # noqa: E402
from infra.stack import Stack  # noqa: E402
from tests.benchmarks import data as bench_data  # noqa: E402
from tests.benchmarks.method import Comparison, Goal, Report, add_arguments, interleaved  # noqa: E402
from tests.benchmarks.services import services  # noqa: E402

RATE = 50  # events per second of event time (Wikimedia: 25-100)
TEMPLATES = 5000  # distinct events the dataset is made of
BATCH_QUERY_NAME = "bench-batch"

USER_COLUMNS = ("window_start", "window_end", "user_name", "edit_count")
WIKI_COLUMNS = ("window_start", "window_end", "wiki", *WIKI_ACTIVITY_COUNTERS)
#: page_activity's columns in spark.sink.PageRow's order.
PAGE_COLUMNS = (
    "window_start", "window_end", "wiki", "namespace", "title", "server_name", "edits", "editors",
    "bot_edits", "anonymous_edits", "bytes_added", "bytes_removed", "new_page", "editor_names",
    "bot_names",
)  # fmt: skip


def say(text: str) -> None:
    print(text, flush=True)


# ---- the dataset -------------------------------------------------------------------------------


def backfill_events(count: int, recording: Path | None) -> list[RecentChange]:
    """``count`` typed events made from TEMPLATES of the synthetic stream's (or a recording's),
    at RATE per second of event time ending now, each up to 5 s out of order."""
    received = datetime.now(UTC)
    base = []
    for raw in bench_data.events(TEMPLATES, recording):
        event = normalize(raw, received_at=received)
        assert isinstance(event, RecentChange), raw[:200]
        base.append(event)
    random.Random(7).shuffle(base)
    start = received - timedelta(seconds=count / RATE)
    jitter = random.Random(11)
    return [
        base[i % len(base)].model_copy(
            update={
                "event_id": f"{base[i % len(base)].event_id}-{i}",
                "event_time": start + timedelta(seconds=i / RATE - jitter.uniform(0, 5)),
            }
        )
        for i in range(count)
    ]


async def produce(settings: Settings, events: Sequence[RecentChange]) -> None:
    """Create the typed topic and write ``events`` to it in transactions, like the worker."""
    topic = settings.kafka.topics.typed
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic.name, topic.partitions, settings.kafka.replication_factor)]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        **producer_options(settings.kafka, transactional_id=f"bench-spark-{uuid.uuid4().hex[:8]}")
    )
    await producer.start()
    try:
        for start in range(0, len(events), MAX_BATCH_RECORDS):  # the worker's largest batch
            async with producer.transaction():
                for event in events[start : start + MAX_BATCH_RECORDS]:
                    await producer.send(
                        topic.name,
                        encode_typed(event),
                        key=event.kafka_key(),
                        headers=list(TYPED_HEADERS),
                    )
    finally:
        await producer.stop()


async def delete_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        await admin.delete_topics([settings.kafka.topics.typed.name])
    finally:
        await admin.close()


# ---- services and scratch state ----------------------------------------------------------------


class Scratch:
    """The benchmark's own topic, databases and checkpoints, all removed by :meth:`close`.

    One database is migrated to head once; every round gets a fresh copy of it (``CREATE
    DATABASE ... TEMPLATE``), with the tables, indexes and triggers the job writes to.
    """

    def __init__(self, stack: Stack, environ: dict[str, str]) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.stack = stack
        self.environ = {**environ, "KAFKA_TOPICS_TYPED_NAME": f"bench-spark-{suffix}"}
        self.checkpoints = Path(tempfile.mkdtemp(prefix="wikipulse-bench-spark-"))
        self.template = f"bench_spark_{suffix}"
        self.counter = itertools.count(1)
        self.topic_created = False
        self.base = self.settings(self.template)  # the topic's, and the migrated database's
        self._admin(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(self.template), sql.Identifier(stack.settings.postgres.user)
            )
        )
        try:
            migrate(self.base)
        except BaseException:
            self._drop(self.template)
            raise

    def _admin(self, statement: sql.Composable) -> None:
        with self.stack.postgres.admin() as cursor:
            cursor.execute(statement)

    def _drop(self, database: str) -> None:
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )

    def settings(self, database: str) -> Settings:
        return load_settings(
            environ={
                **self.environ,
                "POSTGRES_DATABASE": database,
                "SPARK_CHECKPOINT_LOCATION": str(self.checkpoints / database),
            }
        )

    def produce(self, events: Sequence[RecentChange]) -> None:
        self.topic_created = True
        asyncio.run(produce(self.base, events))

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[Settings]:
        """A fresh copy of the migrated database, and a fresh checkpoint location."""
        name = f"{self.template}_{next(self.counter)}"
        settings = self.settings(name)
        self._admin(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(name),
                sql.Identifier(self.template),
                sql.Identifier(self.stack.settings.postgres.user),
            )
        )
        try:
            yield settings
        finally:
            self._drop(name)
            shutil.rmtree(self.checkpoints / name, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.checkpoints, ignore_errors=True)
        self._drop(self.template)
        if self.topic_created:
            asyncio.run(delete_topic(self.base))


# ---- what a round wrote ------------------------------------------------------------------------


def written(settings: Settings) -> tuple[int, ...]:
    """(user_edit_counts rows, wiki_activity rows, events in wiki_activity, events in the daily
    rollup, page_activity rows, edits in page_activity_hourly): the fourth and the last are
    there only if the rollup triggers of migrations 0003 and 0005 ran."""
    with (
        contextlib.closing(psycopg2.connect(**libpq_params(settings.postgres))) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT (SELECT count(*) FROM user_edit_counts), "
            "(SELECT count(*) FROM wiki_activity), "
            "(SELECT coalesce(sum(events), 0) FROM wiki_activity), "
            "(SELECT coalesce(sum(events), 0) FROM activity_totals WHERE grain = 'day'), "
            "(SELECT count(*) FROM page_activity), "
            "(SELECT coalesce(sum(edits), 0) FROM page_activity_hourly)"
        )
        return tuple(cursor.fetchone())


def measured(
    scratch: Scratch,
    side: str,
    expected: tuple[int, ...],
    work: Callable[[Settings], float],
) -> Callable[[], float]:
    """One round of ``work`` on a fresh database; checks it wrote ``expected``."""

    def round_() -> float:
        with scratch.fresh_database() as settings:
            seconds = work(settings)
            found = written(settings)
        if found != expected:
            raise SystemExit(
                f"{side} wrote (user rows, wiki rows, events, events in rollups) {found}, "
                f"expected {expected}: the two sides did not do the same work"
            )
        return seconds

    return round_


def print_round(baseline: str, candidate: str) -> Callable[[int, float, float], None]:
    def show(index: int, base: float, cand: float) -> None:
        say(
            f"  round {index}: {baseline} {base:6.2f} s, {candidate} {cand:6.2f} s "
            f"({base / cand:.2f}x)"
        )

    return show


# ---- 1. backfill ---------------------------------------------------------------------------------


def batch_backfill(spark: Any, settings: Settings) -> tuple[float, Any]:
    """The job's aggregation as a batch query over the whole topic, its rows collected and
    written by the job's sink; (seconds, the rows)."""
    from spark.job import aggregates, kafka_source_options
    from spark.sink import BatchRows, PostgresSink

    sink = PostgresSink(settings.postgres, query_name=BATCH_QUERY_NAME)
    try:
        started = time.perf_counter()
        records = (
            spark.read.format("kafka")
            .options(**kafka_source_options(settings))
            .option("subscribe", settings.kafka.topics.typed.name)
            .option("startingOffsets", "earliest")
            .option("endingOffsets", "latest")
            .option("kafka.isolation.level", "read_committed")
            .option("includeHeaders", "true")  # as the job reads them: the schema headers
            .load()
        )
        rows = BatchRows.split(aggregates(records, settings).collect())
        sink.write_batch(0, rows)
        return time.perf_counter() - started, rows
    finally:
        sink.close()


def streaming_backfill(spark: Any, settings: Settings) -> float:
    from spark.job import run

    started = time.perf_counter()
    run(spark, settings, available_now=True, retention=False)
    return time.perf_counter() - started


# ---- 2. upserts vs COPY --------------------------------------------------------------------------


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of ``values`` (each quoted, its quotes and backslashes
    escaped)."""
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


def copy_buffer(rows: Sequence[Sequence[Any]]) -> io.StringIO:
    """Rows as CSV for COPY (strings quoted, so an empty string is not NULL; lists as array
    literals)."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC).writerows(
        [text_array(v) if isinstance(v, list) else v for v in row] for row in rows
    )
    buffer.seek(0)
    return buffer


def copy_rows(settings: Settings, rows: Any) -> float:
    """COPY into the migrated tables (their triggers fire) and the batch's pipeline_batches row,
    in one transaction, as the sink writes a batch."""
    from spark.sink import UPSERT_BATCH

    started = time.perf_counter()
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    try:
        with connection, connection.cursor() as cursor:
            for table, columns, data in (
                ("user_edit_counts", USER_COLUMNS, rows.user_edit_counts),
                ("wiki_activity", WIKI_COLUMNS, rows.wiki_activity),
                ("page_activity", PAGE_COLUMNS, rows.page_activity),
            ):
                cursor.copy_expert(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)",
                    copy_buffer(data),
                )
            cursor.execute(
                UPSERT_BATCH,
                (
                    BATCH_QUERY_NAME,
                    0,
                    len(rows.user_edit_counts),
                    len(rows.wiki_activity),
                    len(rows.page_activity),
                ),
            )
        return time.perf_counter() - started
    finally:
        connection.close()


def upsert_rows(settings: Settings, rows: Any) -> float:
    from spark.sink import PostgresSink

    sink = PostgresSink(settings.postgres, query_name=BATCH_QUERY_NAME)
    try:
        started = time.perf_counter()
        sink.write_batch(0, rows)
        return time.perf_counter() - started
    finally:
        sink.close()


# ---- the two comparisons ----------------------------------------------------------------------


def measure(
    spark: Any, scratch: Scratch, count: int, rounds: int
) -> tuple[Comparison, Comparison, Any]:
    """Part 1 then part 2; returns their comparisons and the rows part 2 wrote."""
    say("\n1. backfill: batch query (baseline) vs the job with availableNow")
    with scratch.fresh_database() as settings:  # warm-up, not counted; its rows are part 2's
        seconds, rows = batch_backfill(spark, settings)
        expected = written(settings)
    say(f"  warm-up: batch query {seconds:.2f} s")
    if expected[2:4] != (count, count):
        raise SystemExit(f"the batch query counted {expected[2:4]} events, expected {count}")
    with scratch.fresh_database() as settings:
        say(f"  warm-up: job {streaming_backfill(spark, settings):.2f} s")
    backfill = interleaved(
        count,
        measured(scratch, "the batch query", expected, lambda s: batch_backfill(spark, s)[0]),
        measured(scratch, "the job", expected, lambda s: streaming_backfill(spark, s)),
        rounds,
        on_round=print_round("batch query", "job"),
    )

    say(
        f"\n2. upserts vs COPY: {len(rows.user_edit_counts):,} user_edit_counts, "
        f"{len(rows.wiki_activity):,} wiki_activity and {len(rows.page_activity):,} "
        "page_activity rows"
    )
    upserts = interleaved(
        len(rows.user_edit_counts) + len(rows.wiki_activity) + len(rows.page_activity),
        measured(scratch, "COPY", expected, lambda s: copy_rows(s, rows)),
        measured(scratch, "the upserts", expected, lambda s: upsert_rows(s, rows)),
        rounds,
        on_round=print_round("COPY", "upserts"),
    )
    return backfill, upserts, rows


# ---- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="typed events (default 200,000; smoke 2,000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; smoke 2)")
    parser.add_argument(
        "--reuse-services",
        action="store_true",
        help="use the running Kafka and PostgreSQL of the configuration (a topic and databases "
        "of its own, removed at the end) instead of starting them",
    )
    bench_data.add_argument(parser)
    add_arguments(parser)
    args = parser.parse_args()
    count = args.events or (2_000 if args.smoke else 200_000)
    rounds = args.rounds or (2 if args.smoke else 5)
    report = Report("bench_spark", smoke=args.smoke)
    dataset = (
        f"{count:,} typed events made from 5,000 of the {bench_data.describe(args.recording)}, "
        f"fresh ids, {RATE} events/s of event time ({timedelta(seconds=count // RATE)} h:m:s), "
        "up to 5 s out of order (seed 11)"
    )

    say(f"cores: {os.cpu_count()}")
    with services(args.reuse_services, "wikipulse-bench-") as (stack, environ):
        scratch = Scratch(stack, environ)
        try:
            settings = scratch.base
            say(f"dataset: {dataset}")
            started = time.perf_counter()
            scratch.produce(backfill_events(count, args.recording))
            say(
                f"  written to {settings.kafka.topics.typed.name} "
                f"({settings.kafka.topics.typed.partitions} partitions) in "
                f"{time.perf_counter() - started:.1f} s"
            )

            from spark.session import build_session, driver_environment

            os.environ.update(driver_environment(settings))  # read by the JVM getOrCreate starts
            spark = build_session(settings)  # the job's own configuration
            spark.sparkContext.setLogLevel("ERROR")
            say(
                f"spark {spark.version}, master {spark.sparkContext.master}, "
                f"shuffle partitions {spark.conf.get('spark.sql.shuffle.partitions')}"
            )
            try:
                backfill, upserts, rows = measure(spark, scratch, count, rounds)
            finally:
                spark.stop()
        finally:
            scratch.close()

    users, wikis, pages = (
        len(rows.user_edit_counts), len(rows.wiki_activity), len(rows.page_activity)
    )  # fmt: skip
    report.ratio(
        "spark.backfill",
        f"Spark job backfill (availableNow) vs the same aggregation as a batch query, "
        f"{count:,} events",
        backfill,
        goal=Goal(0.8),
        unit_name="events",
        note=f"{dataset}; {users + wikis + pages:,} output rows. Both sides read the whole topic "
        "(read_committed), aggregate with spark.job.aggregates and write the rows with the "
        "job's sink into an empty migrated database, timed from the read's start to the commit; "
        "the job also keeps its state store and checkpoint (fresh each round), records its "
        "pipeline_batches progress, and starts and stops a streaming query",
    )
    report.ratio(
        "spark.upsert",
        f"Sink upserts vs COPY of the same rows into empty tables, {users + wikis + pages:,} rows",
        upserts,
        goal=Goal(0.35),
        unit_name="rows",
        note=f"The aggregates of the {count:,} events above: {users:,} user_edit_counts, "
        f"{wikis:,} wiki_activity and {pages:,} page_activity rows. Both into the migrated "
        "tables of a fresh database, so the rollup triggers (migrations 0003, 0005) run on both "
        "sides (COPY fires them once per table, "
        "the upserts once per 5,000-row statement, their ON CONFLICT the UPDATE triggers too); "
        "both write the batch's pipeline_batches row in the same transaction; timed from "
        "connecting to the commit",
    )
    report.finish(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
