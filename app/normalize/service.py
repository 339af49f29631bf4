"""raw -> typed | dead letter, exactly once through Kafka transactions: the normalizer service.

The normalizer consumes the raw topic in a consumer group (``<app.id>-normalizer``), a batch of
records at a time, and plans each batch with :func:`app.normalize.batch.plan_batch`. For each raw
partition it owns it holds one transactional producer
(``transactional.id = <app.id>-normalizer-<raw topic>-<partition>``: a restarted or rebalanced
owner fences the previous one and aborts what it left open). One batch of one partition is one
transaction: its typed and dead-letter records, its dedup changelog record and the raw offset
after it are committed together or not at all. Consumers of the typed topic read
``read_committed`` (the Spark job does). A partition's dedup state is read back from the
changelog when the partition is assigned.

:class:`Normalizer` is a :class:`mode.Service` that the worker's Faust app runs
(:mod:`app.worker`): ``faust -A app.worker worker`` starts and stops it with the rest, and a
failure of its loop crashes the app, which stops the worker. Its state is named: the dedup state
of each raw partition it owns (:attr:`Normalizer.dedup`) and their transactional producers
(:attr:`Normalizer.producers`); it counts each committed batch in the worker's metrics.

Why a service over aiokafka and not a Faust agent: on a 2-core machine a Faust agent that does
nothing topped out at ~1,300-1,500 events/s (its per-event machinery; a one-off observation),
well under what a backfill or a replay needs, and Faust's exactly-once did not cover the typed
topic the agent writes. This batch loop's rate is measured by tests/benchmarks/bench_ingest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from app.config.clients import aiokafka_options, producer_options
from app.config.names import client_id, normalizer_group, normalizer_transactional_id
from app.config.settings import Settings
from app.metrics import WorkerMetrics
from app.normalize.batch import Batch, DedupState, Topics, plan_batch
from app.normalize.event import Filters

log = logging.getLogger(__name__)

#: Raw records per batch (one transaction); a batch is whatever arrived, up to this.
MAX_BATCH_RECORDS = 5000
#: How often expired dedup batches are tombstoned.
DEDUP_PURGE_INTERVAL = 60.0
#: Wait before retrying a batch whose transaction failed (the broker is away, say).
RETRY_DELAY = 1.0


class Progress(Protocol):
    """Where the worker shows the newest event time and canary time (its ``/health``)."""

    last_event_time: float | None
    last_canary: float | None


class Normalizer(mode.Service):
    """Runs :func:`plan_batch` over the raw topic, one transaction per partition and batch."""

    def __init__(
        self, settings: Settings, filters: Filters, metrics: WorkerMetrics, progress: Progress
    ) -> None:
        self.settings = settings
        self.filters = filters
        self.metrics = metrics
        self.progress = progress
        self.topics = Topics.of(settings)
        self.group = normalizer_group(settings)
        self.window = settings.ingestion.dedup.window.total_seconds()
        #: The dedup state of each raw partition this worker owns, read back on assignment.
        self.dedup: dict[int, DedupState] = {}
        #: Each owned raw partition's transactional producer (its transactional id fences the
        #: partition's previous owner).
        self.producers: dict[int, AIOKafkaProducer] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self._batches: asyncio.Future[None] | None = None  # the loop, from on_start to on_stop
        self._lock = asyncio.Lock()
        self._last_purge: dict[int, float] = {}
        super().__init__()

    def owned_partitions(self) -> list[int]:
        """The raw partitions this worker normalizes now."""
        return sorted(self.producers)

    def _repr_info(self) -> str:
        ids = sum(len(state) for state in self.dedup.values())
        return f"raw partitions {sorted(self.dedup)}, {ids} ids in the dedup window"

    # -- clients --

    def _common(self) -> dict[str, Any]:
        """Brokers and security (SASL/SSL) of every client:
        :func:`app.config.clients.aiokafka_options`."""
        return aiokafka_options(self.settings.kafka)

    def _producer(self, partition: int) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **producer_options(
                self.settings.kafka,
                client_id=client_id(self.settings, "normalizer"),
                transactional_id=normalizer_transactional_id(
                    self.settings, self.topics.raw, partition
                ),
            )
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
                self.dedup[tp.partition] = await self.restore(tp.partition)
                self._last_purge[tp.partition] = 0.0  # the first batch tombstones what expired

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                producer = self.producers.pop(tp.partition, None)
                self.dedup.pop(tp.partition, None)
                if producer is not None:
                    await producer.stop()

    # -- the service's lifecycle --

    async def on_start(self) -> None:
        """Create the dedup changelog if missing, join the group, start the loop."""
        await self.ensure_changelog()
        self.consumer = consumer = self._consumer()
        consumer.subscribe([self.topics.raw], listener=_Rebalance(self))
        await consumer.start()
        self._batches = self.add_future(self._consume(consumer))

    async def on_stop(self) -> None:
        """End the loop (a batch in flight is aborted), then close the producers and leave the
        group."""
        if self._batches is not None:
            self._batches.cancel()
            await asyncio.gather(self._batches, return_exceptions=True)
        await self.revoked([TopicPartition(self.topics.raw, p) for p in list(self.producers)])
        if self.consumer is not None:
            await self.consumer.stop()

    # -- the loop --

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while not self.should_stop:
            fetched = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH_RECORDS)
            for tp, records in fetched.items():
                if records:
                    await self._process(consumer, tp, records)

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: Sequence[ConsumerRecord[Any, Any]],
    ) -> None:
        while True:
            async with self._lock:
                state = self.dedup.get(tp.partition)
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
                        self.committed(batch)
                        return
            await asyncio.sleep(RETRY_DELAY)

    def committed(self, batch: Batch) -> None:
        """Metrics and health for a batch once its transaction is committed."""
        for outcome, count in batch.outcomes.items():
            self.metrics.count(outcome, count)
        for offset, reason in batch.rejections:
            log.info("dead letter %s[%s]@%s: %s", self.topics.raw, batch.partition, offset, reason)
        if batch.last_event_time is not None:
            self.progress.last_event_time = batch.last_event_time
            self.metrics.last_event_time.set(batch.last_event_time)
            self.metrics.lag.set(max(0.0, time.time() - batch.last_event_time))
        if batch.last_canary is not None:
            self.progress.last_canary = batch.last_canary
            self.metrics.last_canary_time.set(batch.last_canary)

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


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands the raw partitions the group assigns or takes away to the normalizer."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.normalizer.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.normalizer.assigned(assigned)
