"""Consumer lag (infra/lag.py, `./infra/wikipulse status`) against the real broker: the
normalizer's consumer group before, during and after a worker catches up, and the Spark job's
checkpoint before and after a real run of the job.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.config import Settings, load_settings
from app.config.names import normalizer_group, spark_checkpoint
from app.contract import HEADER_RECEIVED_AT, HEADER_SSE_ID
from infra.lag import (
    NORMALIZER,
    SPARK,
    ConsumerLag,
    PartitionLag,
    consumer_lag,
    local_path,
    prometheus_text,
    read_checkpoint,
    status_lines,
)
from infra.processes import free_port
from infra.stack import Stack
from tests.events import synthetic
from tests.harness import ROOT, pipeline_environment, running_worker, scratch_database, wait_until
from tests.spark.helpers import produce, typed_events

# ---- no broker: the checkpoint format, the arithmetic ---------------------------------------

OFFSETS_HEADER = (
    'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1795875545093,'
    '"conf":{"spark.sql.shuffle.partitions":"2"}}\n'
)


def write_batch(checkpoint: Path, batch_id: int, offsets: str, *, committed: bool) -> None:
    (checkpoint / "offsets").mkdir(parents=True, exist_ok=True)
    (checkpoint / "commits").mkdir(parents=True, exist_ok=True)
    (checkpoint / "offsets" / str(batch_id)).write_text(OFFSETS_HEADER + offsets)
    # Spark's checksum files sit beside them: they are not batches.
    (checkpoint / "offsets" / f".{batch_id}.crc").write_bytes(b"crc")
    if committed:
        (checkpoint / "commits" / str(batch_id)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def test_the_newest_committed_batch_is_the_position(tmp_path: Path) -> None:
    assert read_checkpoint(tmp_path / "missing") is None
    write_batch(tmp_path, 8, '{"t":{"0":5,"1":7}}', committed=True)
    write_batch(tmp_path, 9, '{"t":{"0":10,"1":12,"2":0}}', committed=True)
    assert read_checkpoint(tmp_path) is not None
    # Batch 10 is planned (its offsets are written first) but not done: not processed yet.
    write_batch(tmp_path, 10, '{"t":{"0":20,"1":25,"2":3}}', committed=False)
    position = read_checkpoint(tmp_path)
    assert position is not None
    assert position.batch_id == 9
    assert position.offsets == {"t": {0: 10, 1: 12, 2: 0}}


def test_a_checkpoint_without_a_committed_batch_has_no_position(tmp_path: Path) -> None:
    write_batch(tmp_path, 0, '{"t":{"0":3}}', committed=False)
    assert read_checkpoint(tmp_path) is None


def test_only_a_local_checkpoint_can_be_read() -> None:
    assert local_path("/var/lib/wikipulse/q") == Path("/var/lib/wikipulse/q")
    assert local_path("file:///data/checkpoints/q") == Path("/data/checkpoints/q")
    assert local_path("s3a://bucket/checkpoints/q") is None
    assert local_path("hdfs://namenode:8020/checkpoints/q") is None


def test_partition_lag_arithmetic() -> None:
    assert PartitionLag(0, start=0, end=10, position=4).lag == 6
    assert PartitionLag(0, start=0, end=10, position=None).lag == 10  # from the beginning
    # Retention deleted records the reader never read: what is left is what it has to read.
    assert PartitionLag(0, start=50, end=80, position=10).lag == 30
    assert PartitionLag(0, start=50, end=80, position=None).lag == 30
    assert PartitionLag(0, start=0, end=10, position=10).lag == 0


def test_the_status_lines_and_the_prometheus_gauges() -> None:
    lags = [
        ConsumerLag(NORMALIZER, "raw", (PartitionLag(0, 0, 7, 4),), True, "group g"),
        ConsumerLag(
            SPARK,
            "typed",
            (PartitionLag(0, 0, 5, 5), PartitionLag(1, 0, 9, 2), PartitionLag(2, 0, 3, 0)),
            True,
            "checkpoint batch 4",
            unit="offsets",
        ),
    ]
    assert status_lines(lags) == [
        "lag normalizer: 3 records behind on raw (group g)",
        "lag spark:      10 offsets behind on typed [partition 1: 7, partition 2: 3] "
        "(checkpoint batch 4)",
    ]
    text = prometheus_text([*lags, ConsumerLag(SPARK, "other", error="no")]).decode()
    gauges = dict(re.findall(r"^(wikipulse_\S+) (\S+)$", text, re.M))
    lag = "wikipulse_consumer_lag_offsets"
    assert gauges[f'{lag}{{consumer="normalizer",partition="0",topic="raw"}}'] == "3.0"
    assert gauges[f'{lag}{{consumer="spark",partition="1",topic="typed"}}'] == "7.0"
    assert gauges['wikipulse_consumer_lag_known{consumer="spark"}'] == "0.0"  # the last wins


@pytest.mark.integration
def test_a_checkpoint_elsewhere_is_reported_unknown(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    settings = load_settings(environ={**stack_env, "SPARK_CHECKPOINT_LOCATION": "s3a://b/c"})
    spark = consumer_lag(settings)[1]
    assert not spark.known
    assert spark.describe() == (
        "unknown (the checkpoint s3a://b/c/wikipulse_aggregates is not on this machine)"
    )


def test_an_unreachable_broker_is_reported_not_raised(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "WIKIPULSE_HOME": str(tmp_path),
            "WIKIPULSE_ENV_FILE": str(tmp_path / "no.env"),
        }
    )
    began = time.monotonic()
    lags = consumer_lag(settings, timeout=8)
    assert time.monotonic() - began < 15
    assert [lag.consumer for lag in lags] == [NORMALIZER, SPARK]
    assert all(not lag.known for lag in lags)
    assert all(line.split(":", 1)[1].strip().startswith("unknown (") for line in status_lines(lags))


# ---- the normalizer's consumer group on the real broker --------------------------------------


async def append_raw(settings: Settings, events: list[bytes], first_id: int) -> None:
    """Append events to the raw topic as the worker's ingest does (no transactions)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        received = str(int(time.time() * 1000)).encode()
        for number, data in enumerate(events, start=first_id):
            headers = [(HEADER_RECEIVED_AT, received), (HEADER_SSE_ID, b'[{"n":%d}]' % number)]
            await producer.send(settings.kafka.topics.raw.name, data, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def commit_group_offset(settings: Settings, offset: int) -> None:
    """Commit an offset for the normalizer's group, as a consumer of the group would."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=normalizer_group(settings),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.kafka.topics.raw.name, 0)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


def kafka_cli_lag(stack: Stack, settings: Settings) -> dict[int, int]:
    """LAG per partition as Kafka's own consumer-group tool shows it, run from the broker's
    Maven jars exactly as infra/README.md writes it."""
    result = subprocess.run(
        [
            "java",
            "-cp",
            f"{stack.home.kafka_jars}/*",
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            settings.kafka.bootstrap_servers,
            "--describe",
            "--group",
            normalizer_group(settings),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    header = next(row for row in rows if row and row[0] == "GROUP")
    topic = settings.kafka.topics.raw.name
    return {
        int(row[header.index("PARTITION")]): int(row[header.index("LAG")])
        for row in rows
        if len(row) > header.index("LAG") and row[1] == topic
    }


@pytest.mark.integration
def test_normalizer_lag_until_a_worker_has_caught_up(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    events = synthetic(384)
    env = pipeline_environment(
        stack_env,
        "http://127.0.0.1:9/unused",
        INGESTION_ENABLED="false",  # the normalizer alone: the raw topic is filled by the test
        SPARK_CHECKPOINT_LOCATION=str(tmp_path / "checkpoints"),
    )
    settings = load_settings(environ=env)
    raw = settings.kafka.topics.raw.name
    group = normalizer_group(settings)

    empty = consumer_lag(settings)
    assert [(lag.consumer, lag.topic, lag.total) for lag in empty] == [
        (NORMALIZER, raw, 0),
        (SPARK, settings.kafka.topics.typed.name, 0),
    ]
    assert (
        empty[1]
        .describe()
        .endswith("(no batch in the checkpoint yet: it starts at the earliest offsets)")
    )

    asyncio.run(append_raw(settings, events, 0))
    normalizer = consumer_lag(settings)[0]
    assert normalizer.total == len(events)  # no worker has run: everything is to read
    assert not normalizer.positioned
    assert normalizer.describe() == (
        f"{len(events)} records behind on {raw} "
        f"(group {group} has no committed offset yet: it starts at the beginning)"
    )

    asyncio.run(commit_group_offset(settings, 100))
    normalizer = consumer_lag(settings)[0]
    assert normalizer.positioned
    assert normalizer.total == len(events) - 100
    assert kafka_cli_lag(stack, settings) == {0: len(events) - 100}

    with running_worker(env, tmp_path / "worker.log") as worker:
        wait_until(
            lambda: consumer_lag(settings)[0].total == 0,
            120,
            "the worker to catch up",
            worker=worker,
        )
        expected = f"lag normalizer: 0 records behind on {raw} (group {group})"
        assert Stack(settings).lag()[0] == expected
        assert kafka_cli_lag(stack, settings) == {0: 0}
    # The worker is gone; the group keeps its offsets: new records are behind.
    asyncio.run(append_raw(settings, events[:25], len(events)))
    normalizer = consumer_lag(settings)[0]
    assert normalizer.total == 25
    assert normalizer.partitions[0].position == len(events)
    text = prometheus_text(consumer_lag(settings)).decode()
    assert (
        f'wikipulse_consumer_lag_offsets{{consumer="normalizer",partition="0",topic="{raw}"}} 25.0'
        in text
    )


# ---- the Spark job's checkpoint, after a real run of the job ---------------------------------


@pytest.mark.integration
def test_spark_lag_from_the_checkpoint_of_a_real_run(
    stack: Stack, stack_env: dict[str, str], subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    received = time.time()
    events = typed_events(synthetic(384), received_at=datetime.fromtimestamp(received, UTC))
    overrides = {
        "KAFKA_TOPICS_TYPED_NAME": f"lag-typed-{os.getpid()}-{int(received)}",
        "SPARK_CHECKPOINT_LOCATION": str(tmp_path / "checkpoints"),
    }
    with scratch_database(stack, {**stack_env, **overrides}) as settings:
        produce(settings, events[:300], per_transaction=100)
        before = consumer_lag(settings)[1]
        assert before.known and not before.positioned
        # 300 records and a commit marker per transaction and partition written to.
        assert 300 < before.total <= 300 + 3 * 3

        env = {
            **subprocess_env,
            **overrides,
            "POSTGRES_DATABASE": settings.postgres.database,
            "SPARK_MASTER": "local[2]",
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
        result = subprocess.run(
            [sys.executable, "-m", "spark.job", "--available-now"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]

        after = consumer_lag(settings)[1]
        assert after.known and after.positioned
        assert after.total == 0, after.describe()
        position = read_checkpoint(Path(spark_checkpoint(settings)))
        assert position is not None
        assert after.detail == f"checkpoint batch {position.batch_id}"
        ends = {p.partition: p.end for p in after.partitions}
        assert position.offsets[settings.kafka.topics.typed.name] == ends

        produce(settings, events[300:], per_transaction=1000)  # one transaction
        behind = consumer_lag(settings)[1]
        assert len(events) - 300 < behind.total <= len(events) - 300 + 3
        typed = settings.kafka.topics.typed.name
        line = Stack(settings).lag()[1]
        assert line.startswith(f"lag spark:      {behind.total} offsets behind on {typed}"), line
