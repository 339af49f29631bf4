"""raw -> typed | dead letter, exactly once through Kafka transactions: the normalizer's loop.

The normalizer consumes the raw topic in a consumer group (``<app.id>-normalizer``), a batch of
records at a time, and plans each batch with :func:`app.normalize.batch.plan_batch`. For each raw
partition it owns it holds one transactional producer
(``transactional.id = <app.id>-normalizer-<raw topic>-<partition>``: a restarted or rebalanced
owner fences the previous one and aborts what it left open). One batch of one partition is one
transaction: its typed and dead-letter records, its dedup changelog record and the raw offset
after it are committed together or not at all. Consumers of the typed topic read
``read_committed`` (the Spark job does). A partition's dedup state is read back from the
changelog when the partition is assigned.

Faust is the worker's frame (the SSE ingest task on the leader, the web server, signals); this
path uses aiokafka directly because a Faust agent's per-event machinery caps it near
1,500 events/s on a 2-core machine, well under what a backfill or a replay needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from app.config.clients import aiokafka_options
from app.config.names import client_id, normalizer_group, normalizer_transactional_id
from app.config.settings import Settings
from app.normalize.batch import Batch, DedupState, Topics, plan_batch
from app.normalize.event import Filters

log = logging.getLogger(__name__)

#: Raw records per batch (one transaction); a batch is whatever arrived, up to this.
MAX_BATCH_RECORDS = 5000
#: How often expired dedup batches are tombstoned.
DEDUP_PURGE_INTERVAL = 60.0
#: Wait before retrying a batch whose transaction failed (the broker is away, say).
RETRY_DELAY = 1.0


OnCommitted = Callable[[Batch], None]


class Normalizer:
    """Runs :func:`plan_batch` over the raw topic, one transaction per partition and batch."""

    def __init__(self, settings: Settings, filters: Filters, on_committed: OnCommitted) -> None:
        self.settings = settings
        self.filters = filters
        self.on_committed = on_committed
        self.topics = Topics.of(settings)
        self.group = normalizer_group(settings)
        self.window = settings.ingestion.dedup.window.total_seconds()
        self.states: dict[int, DedupState] = {}
        self.producers: dict[int, AIOKafkaProducer] = {}
        self._lock = asyncio.Lock()
        self._last_purge: dict[int, float] = {}

    # -- clients --

    def _common(self) -> dict[str, Any]:
        """Brokers and security (SASL/SSL) of every client:
        :func:`app.config.clients.aiokafka_options`."""
        return aiokafka_options(self.settings.kafka)

    def _producer(self, partition: int) -> AIOKafkaProducer:
        kafka = self.settings.kafka
        compression = kafka.producer.compression
        return AIOKafkaProducer(
            **self._common(),
            client_id=client_id(self.settings, "normalizer"),
            transactional_id=normalizer_transactional_id(self.settings, self.topics.raw, partition),
            acks="all",
            enable_idempotence=True,
            compression_type=None if compression == "none" else compression,
            linger_ms=kafka.producer.linger_ms,
            max_batch_size=kafka.producer.batch_size,
            max_request_size=kafka.max_message_bytes,
        )

    def _admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self._common(), client_id=client_id(self.settings, "admin"))

    def _restore_reader(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self._common(),
            client_id=client_id(self.settings, "dedup-restore"),
            enable_auto_commit=False,
            isolation_level="read_committed",
        )

    def _consumer(self) -> AIOKafkaConsumer:
        """The raw topic's consumer, in the normalizer's group."""
        return AIOKafkaConsumer(
            **self._common(),
            client_id=client_id(self.settings, "normalizer"),
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
