"""raw -> typed | dead letter, in batches, exactly once through Kafka transactions.

The normalizer consumes the raw topic in a consumer group (``<app.id>-normalizer``), a batch of
records at a time. For each raw partition it owns it holds one transactional producer
(``transactional.id = <app.id>-normalizer-<raw topic>-<partition>``: a restarted or rebalanced
owner fences the previous one and aborts what it left open). One batch of one partition is one
transaction: its typed and dead-letter records, its dedup changelog record and the raw offset
after it are committed together or not at all. Consumers of the typed topic read
``read_committed`` (the Spark job does).

Deduplication on ``meta.id`` is kept per raw partition over ``ingestion.dedup.window`` (by
processing time, so a rebuild over an old log still drops repeats). Its changelog is a compacted
topic, ``<app.id>-dedup-changelog``, partitioned like the raw topic: one record per batch (key
``<partition>:<first offset>``, value the batch's new ids and time), a tombstone when the batch
leaves the window. A partition's state is read back from it when the partition is assigned, so
it survives restarts, and what an aborted transaction wrote is never read back.

Faust is the worker's frame (the SSE ingest task on the leader, the web server, signals); this
path uses aiokafka directly because a Faust agent's per-event machinery caps it near
1,500 events/s on a 2-core machine, well under what a backfill or a replay needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from app.clients import aiokafka_options
from app.contract import (
    HEADER_RECEIVED_AT,
    HEADER_SCHEMA,
    HEADER_SCHEMA_VERSION,
    HEADER_SSE_ID,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Canary,
    Outcome,
    RecentChange,
)
from app.normalize import Filters, Rejected, normalize
from app.settings import Settings

log = logging.getLogger(__name__)

HEADER_ORIGIN_TOPIC = "origin-topic"
HEADER_ORIGIN_PARTITION = "origin-partition"
HEADER_ORIGIN_OFFSET = "origin-offset"
TYPED_HEADERS = (
    (HEADER_SCHEMA, SCHEMA_NAME.encode()),
    (HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION).encode()),
)
#: Raw records per batch (one transaction); a batch is whatever arrived, up to this.
MAX_BATCH_RECORDS = 5000
#: How often expired dedup batches are tombstoned.
DEDUP_PURGE_INTERVAL = 60.0
#: Wait before retrying a batch whose transaction failed (the broker is away, say).
RETRY_DELAY = 1.0


def consumer_group(settings: Settings) -> str:
    return f"{settings.app.id}-normalizer"


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app.id}-dedup-changelog"


def origin_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        (HEADER_ORIGIN_TOPIC, topic.encode()),
        (HEADER_ORIGIN_PARTITION, str(partition).encode()),
        (HEADER_ORIGIN_OFFSET, str(offset).encode()),
    ]


def encode_typed(event: RecentChange) -> bytes:
    return orjson.dumps(event.model_dump())


def received_at(headers: dict[str, bytes]) -> datetime:
    raw = headers.get(HEADER_RECEIVED_AT)
    if raw:
        try:
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


# ---- dedup state ---------------------------------------------------------------------------


class DedupState:
    """The event ids one raw partition has seen within the window, and their changelog."""

    def __init__(self, window: float, max_ids: int | None = None) -> None:
        self.window = window
        self.max_ids = max_ids
        self.first_seen: dict[str, float] = {}  # event id -> processing time (epoch s)
        self.batches: dict[bytes, tuple[float, list[str]]] = {}  # changelog key -> (t, ids)
        #: Batches forgotten early to stay under ``max_ids``, not yet tombstoned.
        self.evicted: list[bytes] = []
        self._warned = 0.0

    def seen(self, event_id: str, now: float) -> bool:
        """Whether the id was seen within the window before ``now`` (expired entries that are
        not yet purged do not count)."""
        at = self.first_seen.get(event_id)
        return at is not None and at >= now - self.window

    def __len__(self) -> int:
        return len(self.first_seen)

    def add(self, key: bytes, at: float, ids: list[str]) -> None:
        self.batches[key] = (at, ids)
        for event_id in ids:
            self.first_seen[event_id] = at
        self._cap()

    def _cap(self) -> None:
        """Forget the oldest batches while more than ``max_ids`` ids are kept (memory stays
        bounded under a flood: the window is shortened instead, and a warning says so)."""
        if self.max_ids is None or len(self.first_seen) <= self.max_ids:
            return
        while len(self.first_seen) > self.max_ids and len(self.batches) > 1:
            key = next(iter(self.batches))
            self.remove(key)
            self.evicted.append(key)
        now = time.time()
        if now - self._warned >= 60.0:
            self._warned = now
            oldest = next(iter(self.batches.values()))[0]
            log.warning(
                "dedup: more than ingestion.dedup.max_ids = %d ids within the window: the "
                "oldest are forgotten (the window is %.0f s instead of %.0f s)",
                self.max_ids,
                now - oldest,
                self.window,
            )

    def tombstoned(self, keys: Iterable[bytes]) -> None:
        """Once a batch carrying tombstones for ``keys`` is committed."""
        done = set(keys)
        for key in done:
            self.remove(key)
        self.evicted = [key for key in self.evicted if key not in done]

    def remove(self, key: bytes) -> None:
        at, ids = self.batches.pop(key, (0.0, []))
        for event_id in ids:
            if self.first_seen.get(event_id) == at:
                del self.first_seen[event_id]

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (``None``: a tombstone)."""
        if value is None:
            self.remove(key)
            return
        record = orjson.loads(value)
        self.remove(key)
        self.add(key, float(record["t"]), list(record["ids"]))

    def expired(self, now: float) -> list[bytes]:
        horizon = now - self.window
        return [key for key, (at, _) in self.batches.items() if at < horizon]


# ---- one batch: pure --------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None


@dataclass
class Batch:
    """What one batch of raw records becomes: outputs to write in one transaction, and what to
    apply to the in-memory state and metrics once it is committed."""

    partition: int
    first_offset: int
    next_offset: int
    outputs: list[Output] = field(default_factory=list)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    new_ids: list[str] = field(default_factory=list)
    expired: list[bytes] = field(default_factory=list)
    processed_at: float = 0.0
    last_event_time: float | None = None
    last_canary: float | None = None
    rejections: list[tuple[int, Rejected]] = field(default_factory=list)

    @property
    def changelog_key(self) -> bytes:
        return f"{self.partition}:{self.first_offset}".encode()


@dataclass(frozen=True)
class Topics:
    raw: str
    typed: str
    dead_letter: str
    changelog: str

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        topics = settings.kafka.topics
        return cls(
            raw=topics.raw.name,
            typed=topics.typed.name,
            dead_letter=topics.dead_letter.name,
            changelog=changelog_topic(settings),
        )


def headers_dict(headers: Any) -> dict[str, bytes]:
    if not headers:
        return {}
    items: Iterable[tuple[str, bytes]] = headers.items() if isinstance(headers, dict) else headers
    return {key: value for key, value in items}


def plan_batch(
    records: Sequence[ConsumerRecord[Any, Any]],
    *,
    topics: Topics,
    state: DedupState,
    filters: Filters,
    max_bytes: int,
    now: float,
    purge: bool = False,
) -> Batch:
    """The outcome of each raw record of one partition's batch, in order; no I/O."""
    partition = records[0].partition
    batch = Batch(
        partition=partition,
        first_offset=records[0].offset,
        next_offset=records[-1].offset + 1,
        processed_at=now,
    )
    in_batch: set[str] = set()
    for record in records:
        headers = headers_dict(record.headers)
        data = record.value or b""
        origin = origin_headers(record.topic, record.partition, record.offset)
        try:
            result = normalize(data, received_at=received_at(headers), max_bytes=max_bytes)
        except Rejected as rejection:
            kept = [(k, v) for k, v in headers.items() if k in (HEADER_SSE_ID, HEADER_RECEIVED_AT)]
            batch.outputs.append(
                Output(
                    topics.dead_letter,
                    None,
                    data,
                    [
                        ("reason", str(rejection).encode()),
                        ("reason-code", rejection.code.encode()),
                        ("reason-field", (rejection.field or "").encode()),
                        *origin,
                        *kept,
                    ],
                )
            )
            batch.rejections.append((record.offset, rejection))
            batch.outcomes[Outcome.DEAD_LETTER] += 1
            continue
        if isinstance(result, Canary):
            batch.last_canary = now
            batch.outcomes[Outcome.CANARY] += 1
            continue
        if not filters.accept(result):
            batch.outcomes[Outcome.FILTERED] += 1
            continue
        event_id = result.event_id
        if event_id in in_batch or state.seen(event_id, now):
            batch.outcomes[Outcome.DUPLICATE] += 1
            continue
        in_batch.add(event_id)
        batch.new_ids.append(event_id)
        batch.outputs.append(
            Output(
                topics.typed, result.kafka_key(), encode_typed(result), [*TYPED_HEADERS, *origin]
            )
        )
        batch.last_event_time = result.event_time.timestamp()
        batch.outcomes[Outcome.VALID] += 1
    if batch.new_ids:
        value = orjson.dumps({"t": now, "ids": batch.new_ids})
        batch.outputs.append(Output(topics.changelog, batch.changelog_key, value, (), partition))
    batch.expired = [*(state.expired(now) if purge else ()), *state.evicted]
    batch.outputs.extend(
        Output(topics.changelog, key, None, (), partition) for key in batch.expired
    )
    return batch


# ---- the Kafka side ----------------------------------------------------------------------


OnCommitted = Callable[[Batch], None]


class Normalizer:
    """Runs :func:`plan_batch` over the raw topic, one transaction per partition and batch."""

    def __init__(self, settings: Settings, filters: Filters, on_committed: OnCommitted) -> None:
        self.settings = settings
        self.filters = filters
        self.on_committed = on_committed
        self.topics = Topics.of(settings)
        self.group = consumer_group(settings)
        self.window = settings.ingestion.dedup.window.total_seconds()
        self.states: dict[int, DedupState] = {}
        self.producers: dict[int, AIOKafkaProducer] = {}
        self._lock = asyncio.Lock()
        self._last_purge: dict[int, float] = {}

    # -- clients --

    def _common(self) -> dict[str, Any]:
        """Brokers and security (SASL/SSL) of every client: :func:`app.clients.aiokafka_options`."""
        return aiokafka_options(self.settings.kafka)

    def _producer(self, partition: int) -> AIOKafkaProducer:
        kafka = self.settings.kafka
        compression = kafka.producer.compression
        return AIOKafkaProducer(
            **self._common(),
            client_id=f"{kafka.client_id}-normalizer",
            transactional_id=f"{self.settings.app.id}-normalizer-{self.topics.raw}-{partition}",
            acks="all",
            enable_idempotence=True,
            compression_type=None if compression == "none" else compression,
            linger_ms=kafka.producer.linger_ms,
            max_batch_size=kafka.producer.batch_size,
            max_request_size=kafka.max_message_bytes,
        )

    def _admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            **self._common(), client_id=f"{self.settings.kafka.client_id}-admin"
        )

    def _restore_reader(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self._common(),
            client_id=f"{self.settings.kafka.client_id}-dedup-restore",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )

    def _consumer(self) -> AIOKafkaConsumer:
        """The raw topic's consumer, in the normalizer's group."""
        return AIOKafkaConsumer(
            **self._common(),
            client_id=f"{self.settings.kafka.client_id}-normalizer",
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=max(4 << 20, self.settings.kafka.max_message_bytes),
        )

    async def ensure_changelog(self) -> None:
        """Create the compacted dedup changelog, partitioned like the raw topic, if missing."""
        kafka = self.settings.kafka
        admin = self._admin()
        await admin.start()
        try:
            topic = NewTopic(
                self.topics.changelog,
                num_partitions=kafka.topics.raw.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            )
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
        finally:
            await admin.close()

    async def restore(self, partition: int) -> DedupState:
        """Read one changelog partition from its beginning to its end (committed records)."""
        state = DedupState(self.window, self.settings.ingestion.dedup.max_ids)
        tp = TopicPartition(self.topics.changelog, partition)
        reader = self._restore_reader()
        await reader.start()
        try:
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            end = (await reader.end_offsets([tp]))[tp]
            while await reader.position(tp) < end:
                batch = await reader.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    state.restore(record.key, record.value)
        finally:
            await reader.stop()
        log.info(
            "normalizer: dedup state of raw partition %d restored: %d ids", partition, len(state)
        )
        return state

    # -- rebalances --

    async def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                if tp.partition in self.producers:
                    continue
                producer = self._producer(tp.partition)
                # init_transactions: fences a previous owner and aborts what it left open,
                # before the state is read back.
                await producer.start()
                self.producers[tp.partition] = producer
                self.states[tp.partition] = await self.restore(tp.partition)
                self._last_purge[tp.partition] = 0.0  # the first batch tombstones what expired

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                producer = self.producers.pop(tp.partition, None)
                self.states.pop(tp.partition, None)
                if producer is not None:
                    await producer.stop()

    # -- the loop --

    async def run(self) -> None:
        await self.ensure_changelog()
        consumer = self._consumer()
        normalizer = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await normalizer.revoked(revoked)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await normalizer.assigned(assigned)

        consumer.subscribe([self.topics.raw], listener=Listener())
        await consumer.start()
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH_RECORDS)
                for tp, records in fetched.items():
                    if records:
                        await self._process(consumer, tp, records)
        finally:
            await self.revoked([TopicPartition(self.topics.raw, p) for p in list(self.producers)])
            await consumer.stop()

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: Sequence[ConsumerRecord[Any, Any]],
    ) -> None:
        while True:
            async with self._lock:
                state = self.states.get(tp.partition)
                if state is None:
                    return  # revoked meanwhile: the new owner processes these records
                producer = self.producers.get(tp.partition) or await self._new_producer(
                    tp.partition
                )
                if producer is not None:
                    now = time.time()
                    purge = now - self._last_purge.get(tp.partition, 0.0) >= DEDUP_PURGE_INTERVAL
                    batch = plan_batch(
                        records,
                        topics=self.topics,
                        state=state,
                        filters=self.filters,
                        max_bytes=self.settings.ingestion.max_event_bytes,
                        now=now,
                        purge=purge,
                    )
                    try:
                        await self._commit(producer, tp, batch)
                    except KafkaError as error:
                        log.warning(
                            "normalizer: batch %s[%d]@%d..%d not committed (%s); retrying",
                            tp.topic,
                            tp.partition,
                            batch.first_offset,
                            batch.next_offset - 1,
                            error,
                        )
                        await self._drop_producer(tp.partition)
                    else:
                        state.tombstoned(batch.expired)
                        if batch.new_ids:
                            state.add(batch.changelog_key, now, batch.new_ids)
                        if purge:
                            self._last_purge[tp.partition] = now
                        self.on_committed(batch)
                        return
            await asyncio.sleep(RETRY_DELAY)

    async def _commit(self, producer: AIOKafkaProducer, tp: TopicPartition, batch: Batch) -> None:
        async with producer.transaction():
            for out in batch.outputs:
                await producer.send(
                    out.topic,
                    out.value,
                    key=out.key,
                    partition=out.partition,
                    headers=list(out.headers),
                )
            await producer.send_offsets_to_transaction(
                {tp: OffsetAndMetadata(batch.next_offset, "")}, self.group
            )

    async def _drop_producer(self, partition: int) -> None:
        producer = self.producers.pop(partition, None)
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()

    async def _new_producer(self, partition: int) -> AIOKafkaProducer | None:
        """A fresh producer after a failed transaction (its start aborts what was left open);
        ``None`` while the broker cannot be reached."""
        producer = self._producer(partition)
        try:
            await producer.start()
        except KafkaError as error:
            log.warning("normalizer: producer for raw partition %d: %s", partition, error)
            await producer.stop()
            return None
        self.producers[partition] = producer
        return producer
