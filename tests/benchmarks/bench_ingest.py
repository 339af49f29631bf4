"""Ingestion benchmark: two ratios, each against a baseline measured in the same run, the sides
interleaved round by round (tests/benchmarks/method.py). Prints figures, asserts nothing.

1. ``normalize()`` over the synthetic stream (or ``--recording FILE``) against ``orjson.loads``
   alone over the same bytes, one core (each side's CPU time), >= 9 rounds. Goal: >= 0.5x.
2. The worker's raw -> typed through a real broker against a bare aiokafka consume -> produce
   loop that does the same durable work where it can (below), >= 5 rounds. Goal: >= 0.8x.

    .venv/bin/python tests/benchmarks/bench_ingest.py [--events 30000] [--only normalize|worker]
        [--recording FILE] [--smoke] [--reuse-services] [--json FILE]

How part 2 times both sides the same way. Each round of each side gets a raw topic, output
topics and a consumer group of its own; the raw topic is filled with the events in a Kafka
transaction that is left open, so the side's ``read_committed`` consumer sees nothing yet. The
side is started and waited for: its consumer group is Stable with every raw partition assigned
(the worker's ``/health`` answers too), then one more second for its assignment callbacks to end
(transactional producers' init, the worker's restore of its empty dedup state). Then the fill
transaction is committed: the clock starts. It stops when a ``read_committed`` consumer of the
output topics has seen every output record (the worker writes one per event, typed or dead
letter, but none for a canary or a repeated id). So both sides are timed from the moment their
input becomes readable to the last output committed and visible: their first fetch, every batch
and every transaction commit are in; process start-up, group join and producers' init are not.

The baseline reads the raw topic ``read_committed`` in a consumer group, in batches of up to
``MAX_BATCH_RECORDS`` (the worker's), and writes each batch of each raw partition in one
transaction of a transactional producer (the worker's producer options) together with the raw
offset after it (``send_offsets_to_transaction``), into a topic partitioned like the typed one,
keyed as the raw records are. It does not parse the events and writes no dedup changelog record
(the worker writes one per batch). It runs in a process of its own, as the worker does.

Without ``--reuse-services`` the worker part starts its own Kafka in a temporary
``WIKIPULSE_HOME`` and deletes it after; with it, it uses the configured broker and deletes the
topics it made. ``--only normalize`` needs no Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.config import Settings, load_settings  # noqa: E402
from app.config.clients import aiokafka_options, producer_options  # noqa: E402
from app.config.names import client_id, normalizer_group, worker_datadir  # noqa: E402
from app.contract import HEADER_RECEIVED_AT, Canary  # noqa: E402
from app.health import fetch_health, health_url  # noqa: E402
from app.ingest.task import raw_key  # noqa: E402
from app.normalize import Rejected, normalize  # noqa: E402
from app.normalize.service import MAX_BATCH_RECORDS  # noqa: E402
from infra.processes import free_port  # noqa: E402
from infra.stack import Stack  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from tests.benchmarks import data as bench_data  # noqa: E402
from tests.benchmarks.method import Goal, Report, add_arguments, interleaved  # noqa: E402
from tests.conftest import make_home, stack_environment  # noqa: E402
from tests.harness import WorkerProcess  # noqa: E402

EVENTS = 30_000
SMOKE_NORMALIZE_EVENTS = 500
SMOKE_WORKER_EVENTS = 1_000
NORMALIZE_ROUNDS, SMOKE_NORMALIZE_ROUNDS = 9, 3
WORKER_ROUNDS, SMOKE_WORKER_ROUNDS = 5, 1
#: After a side's group is Stable: time for its assignment callbacks to end before the input
#: appears (both sides wait it, untimed).
SETTLE = 1.0
#: The longest a side may take to start (the fill transaction must outlive it).
START_TIMEOUT = 120.0

WORKER_NOTE = (
    "Both sides timed from the commit of their raw input (each side already running, its "
    "consumer assigned in a fresh group) to a read_committed consumer seeing every output "
    "record; process start-up, group join and transactional producers' init are not timed on "
    "either side, nor the worker's restore of its (empty) dedup state. The baseline commits "
    "offsets and writes transactionally in batches of the worker's size, but does not parse "
    "events and writes no dedup changelog record (the worker writes one per batch)."
)


def say(text: str) -> None:
    print(text, flush=True)


def cpu_seconds(work: Callable[[], object]) -> Callable[[], float]:
    """``work`` as a side of a comparison: the CPU seconds one call takes on this thread. Both
    sides are single-threaded and do no I/O: their CPU time is one core's work, which a loaded
    machine does not stretch as it does the wall clock."""

    def timed() -> float:
        started = time.thread_time()
        work()
        return time.thread_time() - started

    return timed


# ---- 1. normalize() ----------------------------------------------------------------------------


def outcome(data: bytes, received_at: datetime) -> object:
    """What normalize() makes of one payload: a typed event, a canary, or the rejection (a
    recording may hold events the worker dead-letters)."""
    try:
        return normalize(data, received_at=received_at)
    except Rejected as rejection:
        return rejection


def bench_normalize(report: Report, events: list[bytes], rounds: int, source: str) -> None:
    received = datetime.now(UTC)
    say(f"\n1. normalize(): {len(events):,} events of the {source}, {rounds} rounds")
    comparison = interleaved(
        len(events),
        cpu_seconds(lambda: [orjson.loads(event) for event in events]),
        cpu_seconds(lambda: [outcome(event, received) for event in events]),
        rounds=rounds,
        on_round=lambda n, base, ours: say(
            f"  round {n}: orjson.loads {base * 1000:.0f} ms, normalize() {ours * 1000:.0f} ms "
            f"({base / ours:.2f}x)"
        ),
    )
    report.ratio(
        "normalize.ratio",
        "normalize() vs orjson.loads alone, same events, one core",
        comparison,
        goal=Goal(0.5),
        note="Each side timed by its thread's CPU time (single-threaded, no I/O), not the wall "
        "clock",
        source=source,
    )
    report.add(
        "normalize.events_per_second",
        "normalize() events/s per core (median round)",
        comparison.rate(comparison.candidate, statistics.median),
        "events/s",
        note="Per CPU second of one thread",
        best=comparison.rate(comparison.candidate, min),
        orjson_loads_median=comparison.rate(comparison.baseline, statistics.median),
        source=source,
    )


# ---- 2. the worker through Kafka: the services -------------------------------------------------


@contextmanager
def kafka_environment(reuse: bool) -> Iterator[dict[str, str]]:
    """The environment that names a running broker: this process's (``--reuse-services``), or
    a broker of our own in a temporary home, stopped and deleted after."""
    if reuse:
        yield dict(os.environ)
        return
    home = make_home("wikipulse-bench-")
    environ = stack_environment(home)
    stack = Stack(load_settings(environ=environ))
    try:
        stack.kafka.up(say)
        yield environ
    finally:
        stack.down(purge=True)  # the home with it


def round_environment(base: dict[str, str], name: str) -> dict[str, str]:
    """A round's configuration: topics, app id (so consumer group and changelog) of its own; the
    worker only normalizes, and no event is filtered out."""
    return {
        **base,
        "APP_ID": name,
        "APP_WEB_PORT": str(free_port()),
        "KAFKA_TOPICS_RAW_NAME": f"{name}.raw",
        "KAFKA_TOPICS_TYPED_NAME": f"{name}.out",
        "KAFKA_TOPICS_TYPED_V2_NAME": f"{name}.out-v2",
        "KAFKA_TOPICS_DEAD_LETTER_NAME": f"{name}.dead-letter",
        "INGESTION_ENABLED": "false",
        "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[]",
        "INGESTION_WIKIMEDIA_FILTERS_WIKIS": "[]",
        "INGESTION_WIKIMEDIA_FILTERS_TYPES": "[]",
    }


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        **aiokafka_options(settings.kafka), client_id=client_id(settings, "bench-admin")
    )


async def delete_topics(settings: Settings, prefix: str) -> list[str]:
    admin = admin_client(settings)
    await admin.start()
    try:
        ours = [topic for topic in await admin.list_topics() if topic.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
        return ours
    finally:
        await admin.close()


# ---- 2. the sides ------------------------------------------------------------------------------


async def bare_loop(settings: Settings, group: str, count: int) -> None:
    """The baseline: consume -> produce, one transaction per batch and raw partition, the raw
    offset committed in it; stops after ``count`` records."""
    kafka = settings.kafka
    raw, sink = kafka.topics.raw, kafka.topics.typed.name
    producers = {
        partition: AIOKafkaProducer(
            **producer_options(
                kafka,
                client_id=client_id(settings, "bare-loop"),
                transactional_id=f"{group}-{raw.name}-{partition}",
            )
        )
        for partition in range(raw.partitions)
    }
    for producer in producers.values():
        await producer.start()  # init_transactions before joining, as the worker does on assign
    consumer = AIOKafkaConsumer(
        raw.name,
        **aiokafka_options(kafka),
        client_id=client_id(settings, "bare-loop"),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=max(4 << 20, kafka.max_message_bytes),
    )
    await consumer.start()
    try:
        done = 0
        while done < count:
            fetched = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH_RECORDS)
            for tp, records in fetched.items():
                producer = producers[tp.partition]
                async with producer.transaction():
                    for record in records:
                        await producer.send(
                            sink, record.value, key=record.key, headers=list(record.headers)
                        )
                    await producer.send_offsets_to_transaction(
                        {tp: OffsetAndMetadata(records[-1].offset + 1, "")}, group
                    )
                done += len(records)
    finally:
        await consumer.stop()
        for producer in producers.values():
            await producer.stop()


def run_bare_loop(environ: dict[str, str], group: str, count: int) -> None:
    """The baseline's process (spawned: a fresh interpreter, like the worker's)."""
    asyncio.run(bare_loop(load_settings(environ=environ), group, count))


class BareLoopSide:
    label = "bare loop"

    def __init__(self, environ: dict[str, str], count: int) -> None:
        self.group = f"{environ['APP_ID']}-bare-loop"
        self.process = multiprocessing.get_context("spawn").Process(
            target=run_bare_loop, args=(environ, self.group, count), daemon=True
        )

    def start(self) -> None:
        self.process.start()

    def answers(self) -> bool:
        return True  # its group's assignment is its readiness

    def failed(self) -> bool:
        return self.process.exitcode not in (None, 0)

    def stop(self) -> None:
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)

    def describe_exit(self) -> str:
        return f"the bare loop exited with code {self.process.exitcode}"


class WorkerSide:
    label = "worker"

    def __init__(self, environ: dict[str, str], log: Path) -> None:
        self.settings = load_settings(environ=environ)
        self.group = normalizer_group(self.settings)
        self.process = WorkerProcess(environ, log)

    def start(self) -> None:
        self.process.start()

    def answers(self) -> bool:
        """Its web server is up: ``/health`` answers (200 or 503)."""
        return fetch_health(health_url(self.settings.app)) is not None

    def failed(self) -> bool:
        return not self.process.alive

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(worker_datadir(self.settings), ignore_errors=True)

    def describe_exit(self) -> str:
        log = self.process.log.read_text(errors="replace")[-3000:]
        return f"the worker exited; its log ({self.process.log}):\n{log}"


Side = BareLoopSide | WorkerSide


async def assigned(admin: AIOKafkaAdminClient, group: str, partitions: set[TopicPartition]) -> bool:
    """Whether ``group`` is Stable with every one of ``partitions`` assigned to a member."""
    try:
        [response] = await admin.describe_consumer_groups([group])
    except KafkaError:
        return False  # no coordinator yet
    [description] = response.to_object()["groups"]
    if description["state"] != "Stable":
        return False
    owned = {
        tp
        for member in description["members"]
        for tp in ConsumerProtocolMemberAssignment.decode(member["member_assignment"]).partitions()
    }
    return partitions <= owned


async def ready(side: Side, settings: Settings) -> None:
    raw = settings.kafka.topics.raw
    partitions = {TopicPartition(raw.name, p) for p in range(raw.partitions)}
    admin = admin_client(settings)
    await admin.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (
            await asyncio.to_thread(side.answers) and await assigned(admin, side.group, partitions)
        ):
            if side.failed():
                raise RuntimeError(side.describe_exit())
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {side.label} did not get its raw partitions assigned")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    await asyncio.sleep(SETTLE)


# ---- 2. one round ------------------------------------------------------------------------------


async def fill_uncommitted(settings: Settings, events: list[bytes]) -> AIOKafkaProducer:
    """The raw topic holds ``events`` (keyed and stamped as the ingest task writes them) in a
    transaction left open: invisible to ``read_committed`` readers until it is committed."""
    topic = settings.kafka.topics.raw.name
    producer = AIOKafkaProducer(
        **producer_options(
            settings.kafka,
            client_id=client_id(settings, "bench-fill"),
            transactional_id=f"{topic}-fill",
            transaction_timeout_ms=int(2 * START_TIMEOUT * 1000),
        )
    )
    await producer.start()
    await producer.begin_transaction()
    stamp = str(int(time.time() * 1000)).encode()
    for data in events:
        await producer.send(topic, data, key=raw_key(data), headers=[(HEADER_RECEIVED_AT, stamp)])
    await producer.flush()
    return producer


async def output_reader(settings: Settings) -> AIOKafkaConsumer:
    """A ``read_committed`` consumer of the round's output topics, positioned at their start."""
    topics = settings.kafka.topics
    partitions = [
        TopicPartition(topic.name, p)
        for topic in (topics.typed, topics.dead_letter)
        for p in range(topic.partitions)
    ]
    reader = AIOKafkaConsumer(
        **aiokafka_options(settings.kafka),
        client_id=client_id(settings, "bench-reader"),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await reader.start()
    reader.assign(partitions)
    for tp in partitions:
        await reader.position(tp)  # resolved now, not once the clock runs
    return reader


async def all_visible(reader: AIOKafkaConsumer, expected: int, side: Side) -> float:
    """When the reader has seen ``expected`` records (perf_counter seconds)."""
    seen = 0
    deadline = time.monotonic() + max(120.0, expected / 100)
    while seen < expected:
        fetched = await reader.getmany(timeout_ms=200)
        seen += sum(len(records) for records in fetched.values())
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {side.label}: {seen} of {expected} outputs visible")
        if not fetched and side.failed():
            raise RuntimeError(side.describe_exit())
    finished = time.perf_counter()
    if seen > expected:
        raise RuntimeError(f"the {side.label} wrote {seen} outputs for {expected}: doubled")
    return finished


async def timed_round(settings: Settings, side: Side, events: list[bytes], expected: int) -> float:
    fill = await fill_uncommitted(settings, events)
    try:
        side.start()
        try:
            await ready(side, settings)
            reader = await output_reader(settings)
            try:
                await fill.commit_transaction()
                started = time.perf_counter()
                return await all_visible(reader, expected, side) - started
            finally:
                await reader.stop()
        finally:
            await asyncio.to_thread(side.stop)
    finally:
        await fill.stop()


class WorkerBench:
    """Part 2's rounds: each side on topics and a group of its own, every round."""

    def __init__(self, environ: dict[str, str], events: list[bytes], logs: Path) -> None:
        self.environ = environ
        self.events = events
        self.logs = logs
        self.prefix = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        self.rounds = 0
        received = datetime.now(UTC)
        outcomes = [outcome(event, received) for event in events]
        # The worker writes nothing for a canary or a repeated id (none in the synthetic stream).
        ids = [o.event_id for o in outcomes if not isinstance(o, Rejected | Canary)]
        self.worker_outputs = sum(isinstance(o, Rejected) for o in outcomes) + len(set(ids))

    def run(self, make_side: Callable[[dict[str, str]], Side], expected: int) -> float:
        self.rounds += 1
        environ = round_environment(self.environ, f"{self.prefix}-{self.rounds}")
        settings = load_settings(environ=environ)
        ensure_topics(settings)
        side = make_side(environ)
        return asyncio.run(timed_round(settings, side, self.events, expected))

    def baseline(self) -> float:
        return self.run(lambda environ: BareLoopSide(environ, len(self.events)), len(self.events))

    def worker(self) -> float:
        return self.run(
            lambda environ: WorkerSide(environ, self.logs / f"worker-{self.rounds}.log"),
            self.worker_outputs,
        )

    def clean_up(self) -> None:
        deleted = asyncio.run(delete_topics(load_settings(environ=self.environ), self.prefix))
        say(f"  deleted {len(deleted)} topics of this run ({self.prefix}*)")


def bench_worker(
    report: Report, events: list[bytes], rounds: int, source: str, reuse: bool
) -> None:
    say(f"\n2. the worker raw -> typed through Kafka: {len(events):,} events, {rounds} rounds")
    with kafka_environment(reuse) as environ, tempfile.TemporaryDirectory() as logs:
        bench = WorkerBench(environ, events, Path(logs))
        try:
            comparison = interleaved(
                len(events),
                bench.baseline,
                bench.worker,
                rounds=rounds,
                on_round=lambda n, base, ours: say(
                    f"  round {n}: bare loop {base:.2f} s, worker {ours:.2f} s ({base / ours:.2f}x)"
                ),
            )
        finally:
            bench.clean_up()
    report.ratio(
        "worker.ratio",
        "worker raw → typed vs a bare transactional aiokafka loop, through Kafka",
        comparison,
        goal=Goal(0.8),
        note=WORKER_NOTE,
        source=source,
    )
    report.add(
        "worker.events_per_second",
        "worker raw → typed events/s, first input read to last output visible (median round)",
        comparison.rate(comparison.candidate, statistics.median),
        "events/s",
        best=comparison.rate(comparison.candidate, min),
        bare_loop_median=comparison.rate(comparison.baseline, statistics.median),
        source=source,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=int,
        help=f"events per round (default {EVENTS:,}; with --smoke {SMOKE_NORMALIZE_EVENTS} for "
        f"normalize(), {SMOKE_WORKER_EVENTS:,} for the worker)",
    )
    parser.add_argument(
        "--only", choices=("normalize", "worker"), help="run one part alone (normalize: no Kafka)"
    )
    parser.add_argument(
        "--reuse-services",
        action="store_true",
        help="use the configured, running Kafka (topics of its own, deleted after) instead of "
        "starting one",
    )
    bench_data.add_argument(parser)
    add_arguments(parser)
    args = parser.parse_args()

    report = Report("bench_ingest", smoke=args.smoke)
    source = bench_data.describe(args.recording)
    if args.only != "worker":
        count = args.events or (SMOKE_NORMALIZE_EVENTS if args.smoke else EVENTS)
        rounds = SMOKE_NORMALIZE_ROUNDS if args.smoke else NORMALIZE_ROUNDS
        bench_normalize(report, bench_data.events(count, args.recording), rounds, source)
    if args.only != "normalize":
        count = args.events or (SMOKE_WORKER_EVENTS if args.smoke else EVENTS)
        rounds = SMOKE_WORKER_ROUNDS if args.smoke else WORKER_ROUNDS
        events = bench_data.events(count, args.recording)
        bench_worker(report, events, rounds, source, args.reuse_services)
    report.finish(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
