"""Ingestion benchmark: prints figures, asserts nothing (machines are noisy).

1. normalize(): events/s per core over the synthetic stream (or --recording FILE), as a
   ratio to orjson.loads alone over the same bytes in the same run (target >= 0.45).
2. The worker's raw -> typed through a real broker, as a ratio to a bare aiokafka
   consume -> produce loop over the same messages (target >= 0.7).

    .venv/bin/python tests/benchmarks/bench_ingest.py [--events 30000] [--only normalize|worker]
        [--recording FILE]

The worker part starts its own Kafka (in a temporary WIKIPULSE_HOME, on free ports) and stops it
after; ``--only normalize`` runs the first part alone, without Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.config import load_settings  # noqa: E402
from app.normalize import normalize  # noqa: E402
from infra.kafka import ensure_topics  # noqa: E402
from infra.stack import Stack  # noqa: E402
from tests.benchmarks import data as bench_data  # noqa: E402
from tests.conftest import make_home, stack_environment  # noqa: E402
from tests.harness import WorkerProcess, read_topic  # noqa: E402


def best_of(repeats: int, run) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def bench_normalize(recording: Path | None) -> None:
    events = bench_data.events(5000, recording)
    received = datetime.now(UTC)
    base = best_of(5, lambda: [orjson.loads(e) for e in events])
    ours = best_of(5, lambda: [normalize(e, received_at=received) for e in events])
    print(f"normalize: {len(events)} events of the {bench_data.describe(recording)}")
    print(f"  orjson.loads alone : {len(events) / base:>10,.0f} events/s")
    print(f"  normalize()        : {len(events) / ours:>10,.0f} events/s per core")
    print(f"  ratio              : {base / ours:.2f}x  (target >= 0.45)")


async def fill(settings, topic: str, events: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=20, acks="all"
    )
    await producer.start()
    try:
        stamp = str(int(time.time() * 1000)).encode()
        for data in events:
            await producer.send(topic, data, headers=[("received-at", stamp)])
        await producer.flush()
    finally:
        await producer.stop()


async def bare_loop(settings, source: str, sink: str, count: int) -> float:
    """aiokafka consume -> produce, the same bytes, no processing: the baseline."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka.producer.linger_ms,
        compression_type="lz4",
    )
    await consumer.start()
    await producer.start()
    consumer.assign([TopicPartition(source, 0)])
    await consumer.seek_to_beginning()
    done = 0
    started = time.perf_counter()
    try:
        while done < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batch.values():
                for record in records:
                    await producer.send(sink, record.value, key=record.key)
                    done += 1
        await producer.flush()
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()


def output_span(records: list) -> float:
    stamps = sorted(r.timestamp for r in records)
    return (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else float("nan")


def bench_worker(count: int, recording: Path | None) -> None:
    home = make_home("wikipulse-bench-")
    env = {**stack_environment(home), "INGESTION_ENABLED": "false",
           "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[]"}  # fmt: skip
    settings = load_settings(environ=env)
    stack = Stack(settings)
    try:
        stack.up(pipeline=False)
        events = bench_data.events(count, recording)
        raw = settings.kafka.topics.raw.name
        asyncio.run(fill(settings, raw, events))
        sink_env = {**env, "KAFKA_TOPICS_TYPED_NAME": "bench.bare-sink"}
        ensure_topics(load_settings(environ=sink_env))
        bare = asyncio.run(bare_loop(settings, raw, "bench.bare-sink", count))

        worker = WorkerProcess(env, home / "worker.log")
        worker.start()
        typed = settings.kafka.topics.typed
        deadline = time.monotonic() + 600
        while True:
            out = asyncio.run(read_topic(settings, typed.name, typed.partitions))
            if len(out) >= count or time.monotonic() > deadline:
                break
            time.sleep(2)
        worker.stop()
        # Worker time: from its first output record to its last (start-up excluded).
        worker_seconds = output_span(out)
        print(f"worker raw -> typed through Kafka: {count} events ({len(out)} typed)")
        print(f"  bare aiokafka consume -> produce : {count / bare:>10,.0f} events/s")
        print(f"  wikipulse worker (normalize)      : {count / worker_seconds:>10,.0f} events/s")
        print(
            f"  ratio                             : {bare / worker_seconds:.2f}x  (target >= 0.7)"
        )
    finally:
        stack.down(purge=True)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--skip-worker", action="store_true", help="the same as --only normalize")
    parser.add_argument(
        "--only",
        choices=("normalize", "worker"),
        help="run one part alone (normalize needs no Kafka)",
    )
    bench_data.add_argument(parser)
    args = parser.parse_args()
    if args.only != "worker":
        bench_normalize(args.recording)
    if args.only != "normalize" and not args.skip_worker:
        bench_worker(args.events, args.recording)


if __name__ == "__main__":
    main()
