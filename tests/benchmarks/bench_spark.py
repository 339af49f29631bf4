"""Benchmark of the Spark job (prints figures; not a test, not timed by pytest).

    .venv/bin/python tests/benchmarks/bench_spark.py [--events 200000] [--live-seconds 90]

Starts its own PostgreSQL and Kafka (in /tmp, on free ports, like the test session) and measures:

1. **Backfill**: ``--events`` typed events in a topic (made from the recorded events, spread over
   time at 50 events/s of event time); the job with ``availableNow`` (Kafka -> aggregation ->
   upserts in PostgreSQL) in events/s, as a ratio to the same aggregation run as a Spark batch
   query over the same topic in the same JVM (its rows collected to the driver, as the job's
   foreachBatch does). Target >= 0.8x.
2. **Upserts**: the backfill's output rows written by the job's sink (INSERT ... ON CONFLICT in
   one transaction) in rows/s, as a ratio to a plain COPY of the same rows into an empty copy of
   each table. Target >= 0.35x.
3. **Freshness**: the job with a 1 s trigger while events arrive at a live rate (50/s); for
   each event, (first moment its count is visible in PostgreSQL - the moment it was handed to
   Kafka, i.e. received). Median and p99. Targets p50 <= 1 s, p99 <= 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import psycopg2  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from app.config import Settings, load_settings  # noqa: E402
from app.config.clients import libpq_params  # noqa: E402
from app.contract import RecentChange  # noqa: E402
from app.normalize import normalize  # noqa: E402
from infra.kafka import fetch_spark_jars  # noqa: E402
from infra.migrations import migrate  # noqa: E402
from infra.stack import Stack  # noqa: E402
from tests.benchmarks import data as bench_data  # noqa: E402
from tests.conftest import stack_environment  # noqa: E402

RATE = 50  # events per second of event time (Wikimedia: 25-100)


def say(text: str) -> None:
    print(text, flush=True)


# ---- data --------------------------------------------------------------------------------------


def templates(recording: Path | None) -> list[RecentChange]:
    received = datetime.now(UTC)
    events = []
    for raw in bench_data.events(5000, recording):
        event = normalize(raw, received_at=received)
        assert isinstance(event, RecentChange)
        events.append(event)
    random.Random(7).shuffle(events)
    return events


def backfill_events(count: int, recording: Path | None) -> list[RecentChange]:
    """``count`` events made from 5,000 of the synthetic stream's (or a recording's), at RATE per
    second of event time, ending now, a few seconds out of order."""
    base = templates(recording)
    start = datetime.now(UTC) - timedelta(seconds=count / RATE)
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


async def create_topic(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.kafka.topics.typed.partitions, 1)])
    finally:
        await admin.close()


def producer(settings: Settings, *, transactional: bool) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5 if transactional else 0,
        compression_type="lz4" if transactional else None,
        transactional_id=f"bench-{uuid.uuid4().hex[:8]}" if transactional else None,
    )


async def produce_all(settings: Settings, events: list[RecentChange]) -> None:
    topic = settings.kafka.topics.typed.name
    await create_topic(settings, topic)
    kafka = producer(settings, transactional=True)
    await kafka.start()
    try:
        for start in range(0, len(events), 2000):  # transactions, like the worker
            async with kafka.transaction():
                for event in events[start : start + 2000]:
                    await kafka.send(topic, orjson.dumps(event.model_dump()), key=event.kafka_key())
    finally:
        await kafka.stop()


# ---- services ------------------------------------------------------------------------------


def start_services() -> tuple[Stack, dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="wikipulse-bench-", dir="/tmp"))
    environ = stack_environment(home)
    stack = Stack(load_settings(environ=environ))
    stack.postgres.start()
    migrate(stack.settings)
    stack.kafka.start()
    fetch_spark_jars(stack.home)
    return stack, environ


def scratch_settings(stack: Stack, environ: dict[str, str], **overrides: str) -> Settings:
    from psycopg2 import sql

    suffix = uuid.uuid4().hex[:8]
    database = f"bench_{suffix}"
    with stack.postgres.admin() as cursor:
        cursor.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(stack.settings.postgres.user)
            )
        )
    settings = load_settings(
        environ={
            **environ,
            "POSTGRES_DATABASE": database,
            "SPARK_CHECKPOINT_LOCATION": str(stack.home.root / "checkpoints" / suffix),
            **overrides,
        }
    )
    migrate(settings)
    return settings


def connect(settings: Settings) -> Any:
    return psycopg2.connect(**libpq_params(settings.postgres))


# ---- 1. backfill -----------------------------------------------------------------------------


def batch_aggregation(spark: Any, settings: Settings) -> tuple[float, list[Any]]:
    from spark.transforms import aggregate, parse_events, sink_rows

    started = time.perf_counter()
    records = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.kafka.topics.typed.name)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .option("kafka.isolation.level", "read_committed")
        .load()
    )
    events = parse_events(records)
    rows = sink_rows(aggregate(events, settings.spark.windowing.duration)).collect()
    return time.perf_counter() - started, rows


def streaming_backfill(spark: Any, settings: Settings) -> float:
    from spark.job import run

    started = time.perf_counter()
    run(spark, settings, available_now=True, retention=False)
    return time.perf_counter() - started


# ---- 2. upserts vs COPY ----------------------------------------------------------------------


def copy_rows(settings: Settings, rows: Any) -> float:
    """A plain COPY of the same rows into empty copies of the tables (same indexes)."""
    connection = connect(settings)
    try:
        with connection, connection.cursor() as cursor:
            for table in ("user_edit_counts", "wiki_activity"):
                cursor.execute(f"DROP TABLE IF EXISTS copy_{table}")
                cursor.execute(f"CREATE TABLE copy_{table} (LIKE {table} INCLUDING ALL)")
        started = time.perf_counter()
        with connection, connection.cursor() as cursor:
            for table, columns, data in (
                (
                    "user_edit_counts",
                    "window_start, window_end, user_name, edit_count",
                    rows.user_edit_counts,
                ),
                (
                    "wiki_activity",
                    "window_start, window_end, wiki, edits, new_pages, bot_edits, "
                    "anonymous_edits, bytes_added, bytes_removed, events",
                    rows.wiki_activity,
                ),
            ):
                buffer = io.StringIO()
                for row in data:
                    buffer.write(
                        "\t".join(
                            value.isoformat() if isinstance(value, datetime) else _copy_text(value)
                            for value in row
                        )
                        + "\n"
                    )
                buffer.seek(0)
                cursor.copy_expert(f"COPY copy_{table} ({columns}) FROM STDIN", buffer)
        return time.perf_counter() - started
    finally:
        connection.close()


def _copy_text(value: Any) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def upsert_rows(settings: Settings, rows: Any, batch_id: int) -> float:
    from spark.sink import PostgresSink

    sink = PostgresSink(settings.postgres, query_name="bench")
    try:
        sink.forget_batches()  # connects (outside the measurement)
        started = time.perf_counter()
        sink.write_batch(batch_id, rows)
        return time.perf_counter() - started
    finally:
        sink.close()


def synthetic_rows(count: int) -> Any:
    from spark.sink import BatchRows

    start = datetime(2026, 1, 1, tzinfo=UTC)
    users = [
        (
            start + timedelta(minutes=i // 500),
            start + timedelta(minutes=i // 500 + 1),
            f"user{i % 500}",
            i % 7 + 1,
        )
        for i in range(count)
    ]
    return BatchRows(users, [])


# ---- 3. freshness ----------------------------------------------------------------------------


class Poller(threading.Thread):
    """Reads wiki_activity's counts every few milliseconds; remembers when each count of each
    (window, wiki) was first seen."""

    def __init__(self, settings: Settings, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.interval = interval
        self.first_seen: dict[tuple[datetime, str], list[tuple[int, float]]] = defaultdict(list)
        self.stopped = threading.Event()

    def run(self) -> None:
        connection = connect(self.settings)
        connection.autocommit = True
        last: dict[tuple[datetime, str], int] = {}
        with connection.cursor() as cursor:
            while not self.stopped.is_set():
                cursor.execute("SELECT window_start, wiki, events FROM wiki_activity")
                now = time.time()
                for start, wiki, events in cursor.fetchall():
                    if events != last.get((start, wiki)):
                        last[(start, wiki)] = events
                        self.first_seen[(start, wiki)].append((events, now))
                time.sleep(self.interval)
        connection.close()


async def produce_live(
    settings: Settings, seconds: float, rate: float
) -> list[tuple[datetime, str, int, float]]:
    """Events at ``rate``/s for ``seconds``, each stamped with the moment it is sent; returns
    (window start, wiki, its rank in that window's count, sent at)."""
    topic = settings.kafka.topics.typed.name
    base = templates(None)
    wikis = [f"bench{w}wiki" for w in range(6)]
    counts: dict[tuple[datetime, str], int] = defaultdict(int)
    sent: list[tuple[datetime, str, int, float]] = []
    kafka = producer(settings, transactional=False)
    await kafka.start()
    try:
        began = time.time()
        i = 0
        while time.time() - began < seconds:
            due = began + i / rate
            await asyncio.sleep(max(0.0, due - time.time()))
            now = time.time()
            received = datetime.fromtimestamp(now, UTC)
            wiki = wikis[i % len(wikis)]
            event = base[i % len(base)].model_copy(
                update={
                    "event_id": f"live-{i}",
                    "event_time": received,
                    "wiki": wiki,
                    "title": "Live",  # one key per wiki: a wiki's events keep their order
                }
            )
            window = received.replace(second=0, microsecond=0)
            counts[(window, wiki)] += 1
            await kafka.send(topic, orjson.dumps(event.model_dump()), key=event.kafka_key())
            sent.append((window, wiki, counts[(window, wiki)], now))
            i += 1
        await kafka.flush()
    finally:
        await kafka.stop()
    return sent


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def freshness(spark: Any, stack: Stack, environ: dict[str, str], seconds: float) -> list[float]:
    from spark.job import start

    settings = scratch_settings(
        stack,
        environ,
        KAFKA_TOPICS_TYPED_NAME=f"bench-live-{uuid.uuid4().hex[:6]}",
        SPARK_TRIGGER_PROCESSING_TIME="1 second",
        SPARK_STARTING_OFFSETS="earliest",
    )
    asyncio.run(create_topic(settings, settings.kafka.topics.typed.name))
    job = start(spark, settings, retention=False)
    poller = Poller(settings)
    poller.start()
    try:
        time.sleep(5)  # the query's first (empty) batches
        sent = asyncio.run(produce_live(settings, seconds, RATE))
        time.sleep(5)
    finally:
        poller.stopped.set()
        poller.join()
        job.stop()
        job.close()
    latencies = []
    warmup = sent[0][3] + 10  # the first seconds of a new query are slower (JIT, first state)
    for window, wiki, rank, sent_at in sent:
        if sent_at < warmup:
            continue
        seen = next((t for count, t in poller.first_seen[(window, wiki)] if count >= rank), None)
        if seen is not None:
            latencies.append(seen - sent_at)
    missing = sum(1 for *_, t in sent if t >= warmup) - len(latencies)
    if missing:
        say(f"  ({missing} events never became visible)")
    with connect(settings) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), "
            "max(duration_ms) FROM pipeline_batches WHERE input_rows > 0"
        )
        batches, median_ms, max_ms = cursor.fetchone()
    say(f"  {batches} batches with data; batch duration median {median_ms:.0f} ms, max {max_ms} ms")
    return latencies


# ---- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--live-seconds", type=float, default=90)
    parser.add_argument("--repeat", type=int, default=2)
    bench_data.add_argument(parser)
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    say(f"cores: {os.cpu_count()}")
    stack, environ = start_services()
    try:
        from spark.session import build_session
        from spark.sink import BatchRows

        topic = f"bench-backfill-{uuid.uuid4().hex[:6]}"
        environ = {**environ, "KAFKA_TOPICS_TYPED_NAME": topic}
        base_settings = scratch_settings(stack, environ)
        say(f"producing {args.events} typed events ...")
        started = time.perf_counter()
        say(f"events made from the {bench_data.describe(args.recording)}")
        events = backfill_events(args.events, args.recording)
        asyncio.run(produce_all(base_settings, events))
        say(f"  produced in {time.perf_counter() - started:.1f} s")

        spark = build_session(base_settings)  # the job's own configuration
        spark.sparkContext.setLogLevel("ERROR")
        say(
            f"spark {spark.version}, master {spark.sparkContext.master}, "
            f"shuffle partitions {spark.conf.get('spark.sql.shuffle.partitions')}"
        )
        batch_aggregation(spark, base_settings)  # warm-up: JIT, class loading, Kafka metadata

        say("\n1. backfill")
        batch_times, stream_times = [], []
        rows: list[Any] = []
        for _ in range(args.repeat):
            elapsed, rows = batch_aggregation(spark, base_settings)
            batch_times.append(elapsed)
            settings = scratch_settings(stack, environ)
            stream_times.append(streaming_backfill(spark, settings))
        batch_rate = args.events / min(batch_times)
        stream_rate = args.events / min(stream_times)
        say(f"  output rows: {len(rows)}")
        say(f"  batch query:        {min(batch_times):6.2f} s  {batch_rate:9,.0f} events/s")
        say(f"  job (availableNow): {min(stream_times):6.2f} s  {stream_rate:9,.0f} events/s")
        say(f"  ratio: {stream_rate / batch_rate:.2f}x (target >= 0.8x)")

        say("\n2. upserts vs COPY")
        for label, data in (
            ("backfill output", BatchRows.split(tuple(row) for row in rows)),
            ("100k user rows", synthetic_rows(100_000)),
        ):
            count = len(data.user_edit_counts) + len(data.wiki_activity)
            settings = scratch_settings(stack, environ)
            copy = min(copy_rows(settings, data) for _ in range(args.repeat))
            insert = upsert_rows(settings, data, 0)  # empty tables: inserts
            again = upsert_rows(settings, data, 1)  # every row conflicts, nothing changes
            say(
                f"  {label} ({count} rows): COPY {count / copy:9,.0f} rows/s; "
                f"upsert into empty tables {count / insert:9,.0f} rows/s "
                f"({copy / insert:.2f}x); upsert of the same rows again {count / again:9,.0f} "
                f"rows/s ({copy / again:.2f}x) (target >= 0.35x)"
            )

        say(f"\n3. freshness: {RATE} events/s for {args.live_seconds:.0f} s, trigger 1 s")
        latencies = freshness(spark, stack, environ, args.live_seconds)
        say(
            f"  {len(latencies)} events: p50 {statistics.median(latencies):.2f} s, "
            f"p99 {percentile(latencies, 0.99):.2f} s, max {max(latencies):.2f} s "
            "(targets p50 <= 1 s, p99 <= 3 s)"
        )
        spark.stop()
    finally:
        stack.down(purge=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
