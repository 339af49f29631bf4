"""The ingest task: SSE -> raw, on the Faust leader only (one SSE connection per deployment).

It follows the SSE stream (:class:`app.ingest.sse.SseSource`) and appends each event's bytes, as
received, to the raw topic, keyed by its ``meta.id`` (:func:`raw_key`), with its SSE id and
receive time in headers. It resumes after the last event durably in the raw topic. When the
leader leaves, the worker elected next takes the stream over. The worker (:mod:`app.worker`)
runs it as a Faust task and serves its :class:`HealthState` at ``/health``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from app.config.clients import aiokafka_options, producer_options
from app.config.names import client_id
from app.config.settings import Settings
from app.contract import HEADER_RECEIVED_AT, HEADER_SSE_ID, HEADER_TRUNCATED_FROM
from app.ingest.reconnect import RECONNECT_REASONS, StreamFailure
from app.ingest.resume import ResumePoint
from app.ingest.sse import SseEvent, SseSource, user_agent
from app.metrics import WorkerMetrics
from app.normalize.batch import headers_dict

log = logging.getLogger(__name__)

#: Room for a raw record's headers and batch framing below kafka.max_message_bytes.
RECORD_OVERHEAD = 64 * 1024
#: How often a worker checks whether it is the leader (and so holds the SSE connection).
LEADERSHIP_POLL_INTERVAL = 1.0
#: The worker's own reconnect reason: writing to the raw topic failed, so it reads the stream
#: again from the last durable event.
KAFKA_ERROR: Final = "kafka_error"
#: Every reason in ``wikipulse_sse_reconnects_total{reason}``: the SSE source's and the worker's.
INGEST_RECONNECT_REASONS: Final = RECONNECT_REASONS | {KAFKA_ERROR}


@dataclass
class HealthState:
    connected: bool = False
    last_received: float | None = None  # monotonic-independent: epoch seconds
    last_canary: float | None = None
    last_event_time: float | None = None

    ingesting: bool = True  # False: a normalizer-only worker (no SSE), healthy while it runs
    #: Whether this worker holds the SSE connection (the Faust leader); None: not known yet.
    leader: bool | None = None
    #: Why the stream was last lost or not reached, and when it is tried next.
    last_error: StreamFailure | None = None

    def healthy(self, timeout: float, now: float | None = None) -> bool:
        if not self.ingesting or self.leader is False:
            return True  # normalizing only; the leader follows the stream
        now = time.time() if now is None else now
        recent = [t for t in (self.last_received, self.last_canary) if t is not None]
        return self.connected and bool(recent) and now - max(recent) <= timeout


class IngestTask:
    """SSE -> raw while this worker is the leader (``is_leader``: the Faust app's)."""

    def __init__(
        self,
        settings: Settings,
        metrics: WorkerMetrics,
        health: HealthState,
        is_leader: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.is_leader = is_leader

    async def follow_leadership(self) -> None:
        """Run :meth:`ingest` while this worker is the Faust leader: one SSE connection per
        deployment, and when the leader leaves, the worker elected next takes the stream over
        (resuming after the last event durably in the raw topic)."""
        ingesting: asyncio.Task[None] | None = None
        try:
            while True:
                leader = self.is_leader()
                if leader != self.health.leader:
                    log.info("ingest: %s", "leader: following the stream" if leader else
                             "not the leader: normalizing only")  # fmt: skip
                self.health.leader = leader
                if leader and (ingesting is None or ingesting.done()):
                    if (
                        ingesting is not None
                        and not ingesting.cancelled()
                        and ingesting.exception()
                    ):
                        log.error("ingest: stopped (%r); starting again", ingesting.exception())
                    ingesting = asyncio.ensure_future(self.ingest())
                elif not leader and ingesting is not None:
                    await _cancel(ingesting)
                    ingesting = None
                    self.health.connected = False
                    self.metrics.connected.set(0)
                await asyncio.sleep(LEADERSHIP_POLL_INTERVAL)
        finally:
            if ingesting is not None:
                await _cancel(ingesting)

    async def last_raw_sse_id(self) -> str | None:
        """The SSE id of the newest record in the raw topic (what Last-Event-ID resumes from)."""
        return await read_last_sse_id(self.settings)

    async def ingest(self) -> None:
        settings = self.settings
        ingestion = settings.ingestion
        producer = ingest_producer(settings)
        await producer.start()
        durable = ResumePoint(await self.last_raw_sse_id())
        log.info("ingest: resuming after SSE id %s", durable.id)

        async def resume_id() -> str | None:
            # Everything sent is durable (or failed) before we reconnect.
            await producer.flush()
            durable.reset()
            return durable.id

        def on_reconnect(reason: str) -> None:
            self._disconnected(reason, source.last_failure)

        def on_connect() -> None:
            self.health.connected = True
            self.metrics.connected.set(1)

        source = SseSource(
            ingestion.wikimedia.url,
            user_agent=user_agent(ingestion.wikimedia.contact),
            read_timeout=ingestion.read_timeout.total_seconds(),
            backoff_initial=ingestion.backoff.initial.total_seconds(),
            backoff_max=ingestion.backoff.max.total_seconds(),
            since=ingestion.since or None,
            resume_id=resume_id,
            on_reconnect=on_reconnect,
            on_connect=on_connect,
        )
        try:
            while True:
                try:
                    async for event in source.events():
                        await self._append_raw(producer, event, durable)
                        if durable.failure is not None:
                            raise durable.failure  # reconnect, resuming before it
                except KafkaError as error:
                    log.error("ingest: writing to the raw topic failed (%s); reconnecting", error)
                    wait = ingestion.backoff.initial.total_seconds()
                    now = datetime.now(UTC)
                    failure = StreamFailure(
                        reason=KAFKA_ERROR,
                        message=f"writing to the raw topic failed: {error}",
                        at=now,
                        next_attempt=now + timedelta(seconds=wait),
                        failures=1,
                    )
                    self._disconnected(KAFKA_ERROR, failure)
                    await asyncio.sleep(wait)
        finally:
            await source.close()
            await producer.stop()

    def _disconnected(self, reason: str, failure: StreamFailure | None) -> None:
        """The stream is lost (or was not reached): count it, and keep why for /health."""
        self.health.connected = False
        self.metrics.connected.set(0)
        self.metrics.reconnects.labels(reason=reason).inc()
        if failure is not None:
            self.health.last_error = failure

    async def _append_raw(
        self, producer: AIOKafkaProducer, event: SseEvent, durable: ResumePoint
    ) -> None:
        received_ms = int(event.received_at.timestamp() * 1000)
        headers = [(HEADER_RECEIVED_AT, str(received_ms).encode())]
        if event.id is not None:
            headers.append((HEADER_SSE_ID, event.id.encode()))
        data = event.data
        key = raw_key(data)
        limit = self.settings.kafka.max_message_bytes - RECORD_OVERHEAD
        if len(data) > limit:
            # Larger than a Kafka record may be: keep its head, say so; the normalizer
            # dead-letters it (too large), and the stream goes on.
            log.warning(
                "ingest: event of %d bytes truncated to %d in the raw log", len(data), limit
            )
            headers.append((HEADER_TRUNCATED_FROM, str(len(data)).encode()))
            data = data[:limit]
        sequence = durable.sent()
        delivery = await producer.send(
            self.settings.kafka.topics.raw.name, data, key=key, headers=headers
        )

        def delivered(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                durable.failed(KafkaError("delivery cancelled"))
            elif (error := future.exception()) is not None:
                durable.failed(error)
            else:
                durable.delivered(sequence, event.id)

        delivery.add_done_callback(delivered)
        self.metrics.received.inc()
        self.health.last_received = event.received_at.timestamp()
        self.metrics.last_received_time.set(self.health.last_received)


def error_report(failure: StreamFailure | None) -> dict[str, Any] | None:
    """``/health``'s ``last_error``: times in epoch seconds, like its other times."""
    if failure is None:
        return None
    return {
        "reason": failure.reason,
        "message": failure.message,
        "at": failure.at.timestamp(),
        "next_attempt": failure.next_attempt.timestamp(),
        "failures": failure.failures,
    }


def raw_key(data: bytes) -> bytes | None:
    """A raw record's key: the event's ``meta.id``, so that repeats of an event land in one raw
    partition, where the normalizer's dedup (per partition) sees them; ``None`` when the
    payload has none (not JSON, no ``meta.id``: it is dead-lettered anyway)."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    meta = event.get("meta") if isinstance(event, dict) else None
    event_id = meta.get("id") if isinstance(meta, dict) else None
    return event_id.encode() if isinstance(event_id, str) and event_id else None


def ingest_producer(settings: Settings) -> AIOKafkaProducer:
    """The ingest task's producer to the raw topic (idempotent, acks from every replica)."""
    return AIOKafkaProducer(
        **producer_options(settings.kafka, client_id=client_id(settings, "ingest"))
    )


def resume_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The reader of the raw topic's last records (no group, committed records only)."""
    return AIOKafkaConsumer(
        **aiokafka_options(settings.kafka),
        client_id=client_id(settings, "resume"),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def read_last_sse_id(settings: Settings) -> str | None:
    """The ``sse-id`` header of the newest record across the raw topic's partitions."""
    topic = settings.kafka.topics.raw.name
    consumer = resume_consumer(settings)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka.topics.raw.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        newest: tuple[int, str] | None = None
        for tp in partitions:
            if ends[tp] == 0:
                continue
            consumer.seek(tp, ends[tp] - 1)
            batch = await consumer.getmany(tp, timeout_ms=10000, max_records=1)
            for record in batch.get(tp, []):
                headers = headers_dict(record.headers)
                sse_id = headers.get(HEADER_SSE_ID)
                if sse_id is not None and (newest is None or record.timestamp >= newest[0]):
                    newest = (record.timestamp, sse_id.decode())
        return None if newest is None else newest[1]
    finally:
        await consumer.stop()
