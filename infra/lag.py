"""Consumer lag of wikipulse's two readers of Kafka: how many offsets each has yet to read
(records on the raw topic; records and transaction markers on the typed topic).

- **normalizer**: the worker's consumer group ``<app.id>-normalizer`` over the raw topic. It
  commits its offsets inside its Kafka transactions (``send_offsets_to_transaction``), so the
  group's committed offsets are exactly what is processed. Lag = the raw topic's end offsets
  (``read_committed``) − the group's committed offsets.
- **spark**: the Spark job commits no consumer-group offsets; its position is its checkpoint.
  ``offsets/<N>`` holds the end offsets of micro-batch N (written before the batch runs),
  ``commits/<N>`` marks batch N done. Lag = the typed topic's end offsets (``read_committed``,
  as the job reads) − the offsets of the newest committed batch. The checkpoint is read rather
  than the query's progress: it is what the job resumes from, it is there whether or not the
  job runs, and nothing else records the offsets (``pipeline_batches`` has no offset column).
  Only a checkpoint on the local file system can be read here (``spark.checkpoint.location``
  empty, a path, or ``file:``); for ``hdfs://``, ``s3a://``… the lag is reported unknown.

A reader without a position starts at the log's first offset (the normalizer and a new Spark
checkpoint with ``spark.starting_offsets = earliest``), so its lag counts the whole log. On the
typed topic (written in transactions) an offset is a record or a commit marker (one per
transaction and partition: about half the offsets at the live stream's pace), so the Spark job's
lag is given in offsets, like ``kafka-consumer-groups.sh`` gives it; on the raw topic (no
transactions) offsets are records. Both are 0 when the reader has caught up.

``./infra/wikipulse status`` prints one line per reader (:func:`status_lines`);
``python -m infra.lag`` prints the same, or with ``--prometheus`` the gauges in Prometheus'
text format (for node_exporter's textfile collector, say).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from app.config import Settings, load_settings_or_exit
from app.config.clients import aiokafka_options
from app.config.names import normalizer_group, spark_checkpoint, spark_source

NORMALIZER = "normalizer"
SPARK = "spark"
#: The normalizer's raw topic is written without transactions (an offset is a record); the
#: typed topic is transactional, so its offsets also count the commit markers.
UNITS = {NORMALIZER: "records", SPARK: "offsets"}
#: How long one lag computation may take before it is reported unknown (status never hangs).
TIMEOUT = 10.0
REQUEST_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    start: int  # the log's first offset (retention may have deleted what came before)
    end: int  # the end offset a read_committed reader sees (last stable offset)
    position: int | None  # the reader's next offset; None: it has none yet

    @property
    def lag(self) -> int:
        """Offsets from the reader's position (or, without one, the log's start) to the end."""
        position = self.start if self.position is None else max(self.position, self.start)
        return max(0, self.end - position)


@dataclass(frozen=True)
class ConsumerLag:
    """One reader's lag on one topic; ``error`` set when it could not be computed."""

    consumer: str  # "normalizer" | "spark"
    topic: str
    partitions: tuple[PartitionLag, ...] = ()
    positioned: bool = False  # whether the reader has a position (committed offsets, a batch)
    detail: str = ""  # where the position comes from: "group …", "checkpoint batch 12"
    error: str | None = None
    #: What an offset is on this topic: "records" (raw: no transactions), or "offsets" (typed:
    #: records and one transaction marker per transaction and partition).
    unit: str = "records"

    @property
    def known(self) -> bool:
        return self.error is None

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def describe(self) -> str:
        """One line for ``status``: how far behind (in :attr:`unit`), on which topic, from which
        position (per partition when several partitions lag)."""
        if self.error is not None:
            return f"unknown ({self.error})"
        text = f"{self.total} {self.unit} behind on {self.topic}"
        behind = [p for p in self.partitions if p.lag]
        if len(self.partitions) > 1 and behind:
            text += " [" + ", ".join(f"partition {p.partition}: {p.lag}" for p in behind) + "]"
        return f"{text} ({self.detail})" if self.detail else text


# ---- Kafka -----------------------------------------------------------------------------------


@dataclass
class _Clients:
    settings: Settings
    admin: AIOKafkaAdminClient = field(init=False)
    consumer: AIOKafkaConsumer = field(init=False)

    async def __aenter__(self) -> _Clients:
        kafka = self.settings.kafka
        admin = AIOKafkaAdminClient(
            **aiokafka_options(kafka),
            client_id=f"{kafka.client_id}-lag",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        await admin.start()  # raises when Kafka does not answer: nothing else to close then
        # No group: it only asks for offsets, as a read_committed reader sees them.
        consumer = AIOKafkaConsumer(
            **aiokafka_options(kafka),
            client_id=f"{kafka.client_id}-lag",
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            await admin.close()
            raise
        self.admin, self.consumer = admin, consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.consumer.stop()
        finally:
            await self.admin.close()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        described = await self.admin.describe_topics([topic])
        if not described or described[0].get("error_code", 0) != 0:
            raise LookupError(f"topic {topic} does not exist")
        return sorted(
            (TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]),
            key=lambda tp: tp.partition,
        )

    async def offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        """partition -> (first offset, read_committed end offset)."""
        tps = await self.partitions(topic)
        starts = await self.consumer.beginning_offsets(tps)
        ends = await self.consumer.end_offsets(tps)
        return {tp.partition: (starts[tp], ends[tp]) for tp in tps}

    async def group_positions(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets on ``topic`` (partitions without one are absent)."""
        committed = await self.admin.list_consumer_group_offsets(group)
        return {
            tp.partition: meta.offset
            for tp, meta in committed.items()
            if tp.topic == topic and meta.offset >= 0
        }


def _lag(
    consumer: str,
    topic: str,
    offsets: dict[int, tuple[int, int]],
    positions: dict[int, int] | None,
    detail: str,
) -> ConsumerLag:
    positions = positions or {}
    return ConsumerLag(
        consumer=consumer,
        topic=topic,
        partitions=tuple(
            PartitionLag(partition, start, end, positions.get(partition))
            for partition, (start, end) in sorted(offsets.items())
        ),
        positioned=bool(positions),
        detail=detail,
        unit=UNITS[consumer],
    )


# ---- the Spark checkpoint --------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointPosition:
    batch_id: int
    offsets: dict[str, dict[int, int]]  # topic -> partition -> next offset to read


def local_path(location: str) -> Path | None:
    """A checkpoint URI as a local path; None when it is on another file system."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else location)
    return None


def _batch_ids(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def read_checkpoint(checkpoint: Path) -> CheckpointPosition | None:
    """The end offsets of the newest committed micro-batch in a Spark checkpoint; None before
    the first batch is committed.

    Spark's offset log (``offsets/<N>``) is text: a version line (``v1``), a JSON line of batch
    metadata, then one line per source — for the Kafka source a JSON object
    ``{"topic": {"partition": offset, …}}``. A batch whose ``commits/<N>`` is missing is still
    running (or failed): its offsets are planned, not processed.
    """
    committed = set(_batch_ids(checkpoint / "commits"))
    for batch_id in reversed(_batch_ids(checkpoint / "offsets")):
        if batch_id not in committed:
            continue
        lines = (checkpoint / "offsets" / str(batch_id)).read_text().splitlines()
        if not lines or not lines[0].startswith("v"):
            raise ValueError(f"{checkpoint}/offsets/{batch_id}: not a Spark offset log")
        offsets: dict[str, dict[int, int]] = {}
        for line in lines[2:]:
            if not line.strip().startswith("{"):
                continue  # "-": a source without an offset in this batch
            for topic, partitions in json.loads(line).items():
                offsets[topic] = {int(p): int(o) for p, o in partitions.items()}
        return CheckpointPosition(batch_id, offsets)
    return None


# ---- both readers ----------------------------------------------------------------------------


async def _normalizer_lag(clients: _Clients, settings: Settings) -> ConsumerLag:
    topic = settings.kafka.topics.raw.name
    group = normalizer_group(settings)
    try:
        offsets = await clients.offsets(topic)
        positions = await clients.group_positions(group, topic)
    except Exception as error:  # any client failure: unknown, and why
        return ConsumerLag(NORMALIZER, topic, error=_reason(error))
    detail = f"group {group}"
    if not positions:
        detail += " has no committed offset yet: it starts at the beginning"
    return _lag(NORMALIZER, topic, offsets, positions, detail)


async def _spark_lag(clients: _Clients, settings: Settings) -> ConsumerLag:
    topic = spark_source(settings).name
    location = spark_checkpoint(settings)
    path = local_path(location)
    if path is None:
        return ConsumerLag(SPARK, topic, error=f"the checkpoint {location} is not on this machine")
    try:
        position = read_checkpoint(path)
    except (OSError, ValueError) as error:
        return ConsumerLag(SPARK, topic, error=f"reading the checkpoint {location}: {error}")
    try:
        offsets = await clients.offsets(topic)
    except Exception as error:
        return ConsumerLag(SPARK, topic, error=_reason(error))
    if position is None:
        if settings.spark.starting_offsets == "latest":
            # A new checkpoint starting at the end has nothing to catch up on.
            ends = {partition: end for partition, (_, end) in offsets.items()}
            detail = "no batch in the checkpoint yet: it starts at the latest offsets"
            return _lag(SPARK, topic, offsets, ends, detail)
        detail = "no batch in the checkpoint yet: it starts at the earliest offsets"
        return _lag(SPARK, topic, offsets, None, detail)
    positions = position.offsets.get(topic)
    detail = f"checkpoint batch {position.batch_id}"
    if positions is None:  # the job was pointed at another topic: it reads this one anew
        detail += f" holds no offsets of {topic}"
    return _lag(SPARK, topic, offsets, positions, detail)


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    name = type(error).__name__
    if isinstance(error, LookupError) or text.startswith(name):  # aiokafka names itself
        return text or name
    return f"{name}: {text}" if text else name


async def collect(settings: Settings) -> list[ConsumerLag]:
    """The lag of the normalizer and of the Spark job (each ``known`` or with its ``error``)."""
    try:
        async with _Clients(settings) as clients:
            return [await _normalizer_lag(clients, settings), await _spark_lag(clients, settings)]
    except Exception as error:
        reason = f"Kafka does not answer: {_reason(error)}"
        topics = settings.kafka.topics
        return [
            ConsumerLag(NORMALIZER, topics.raw.name, error=reason),
            ConsumerLag(SPARK, spark_source(settings).name, error=reason),
        ]


def consumer_lag(settings: Settings, timeout: float = TIMEOUT) -> list[ConsumerLag]:
    """:func:`collect`, synchronously, within ``timeout`` seconds."""

    async def bounded() -> list[ConsumerLag]:
        return await asyncio.wait_for(collect(settings), timeout)

    # aiokafka logs each failed connection itself; the lines report them once, in their words.
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(bounded())
    except TimeoutError:
        reason = f"Kafka did not answer within {timeout:.0f} s"
        topics = settings.kafka.topics
        return [
            ConsumerLag(NORMALIZER, topics.raw.name, error=reason),
            ConsumerLag(SPARK, spark_source(settings).name, error=reason),
        ]
    finally:
        client_log.setLevel(level)


def status_lines(lags: Sequence[ConsumerLag]) -> list[str]:
    """``lag normalizer: …`` and ``lag spark: …``, aligned."""
    width = max((len(lag.consumer) for lag in lags), default=0)
    return [f"lag {lag.consumer + ':':<{width + 1}} {lag.describe()}" for lag in lags]


def prometheus_text(lags: Sequence[ConsumerLag]) -> bytes:
    """The lag as Prometheus gauges: ``wikipulse_consumer_lag_offsets`` per partition, and
    ``wikipulse_consumer_lag_known`` (1, or 0 when it could not be computed)."""
    registry = CollectorRegistry()
    offsets = Gauge(
        "wikipulse_consumer_lag_offsets",
        "Offsets a reader of Kafka has yet to read: the end offset (read_committed) minus its "
        "position, per partition (on the typed topic, records and transaction markers).",
        ["consumer", "topic", "partition"],
        registry=registry,
    )
    known = Gauge(
        "wikipulse_consumer_lag_known",
        "1 when the reader's lag could be computed, else 0.",
        ["consumer"],
        registry=registry,
    )
    for lag in lags:
        known.labels(consumer=lag.consumer).set(1 if lag.known else 0)
        for partition in lag.partitions:
            offsets.labels(
                consumer=lag.consumer, topic=lag.topic, partition=str(partition.partition)
            ).set(partition.lag)
    return generate_latest(registry)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.lag",
        description="Consumer lag of the normalizer (its consumer group) and of the Spark job "
        "(its checkpoint), in offsets (records, and on the typed topic transaction markers); "
        "configured like every component.",
    )
    parser.add_argument(
        "--prometheus", action="store_true", help="print Prometheus gauges (text format)"
    )
    args = parser.parse_args(argv)
    settings = load_settings_or_exit("lag")
    lags = consumer_lag(settings)
    if args.prometheus:
        sys.stdout.buffer.write(prometheus_text(lags))
    else:
        sys.stdout.write("".join(line + "\n" for line in status_lines(lags)))
    return 0 if all(lag.known for lag in lags) else 1


if __name__ == "__main__":
    raise SystemExit(main())
