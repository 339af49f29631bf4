"""The ingest task: SSE -> raw, on the Faust leader only (one SSE connection per deployment).

It follows the SSE stream (:class:`app.ingest.sse.SseSource`) and appends each event's bytes, as
received, to the raw topic, keyed by its ``meta.id`` (:func:`raw_key`), with its SSE id and
receive time in headers. It resumes after the last event durably in the raw topic with every
event before it (:mod:`app.ingest.resume`). When the leader leaves, the worker elected next
takes the stream over from there. The worker (:mod:`app.worker`)
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
from app.contract import (
    HEADER_RECEIVED_AT,
    HEADER_RESUME_ID,
    HEADER_RESUME_TIME,
    HEADER_SSE_ID,
    HEADER_TRUNCATED_FROM,
)
from app.ingest.reconnect import RECONNECT_REASONS, StreamFailure
from app.ingest.resume import Durable, ResumePoint, Takeover
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

    async def ingest(self) -> None:
        settings = self.settings
        ingestion = settings.ingestion
        producer = ingest_producer(settings)
        await producer.start()
        takeover = await read_takeover(settings)
        durable = ResumePoint(takeover.point)
        written = set(takeover.written)
        log.info("ingest: resuming after SSE id %s (%d events after it already in the raw log)",
                 durable.id, len(written))  # fmt: skip

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
                        if event.id is not None and event.id in written:
                            written.discard(event.id)  # written by the worker before us
                            durable.delivered(durable.sent(), event.id, takeover.point.time_ms)
                            continue
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
        point = durable.point
        headers = [
            (HEADER_RECEIVED_AT, str(received_ms).encode()),
            (HEADER_RESUME_ID, (point.id or "").encode()),
            (HEADER_RESUME_TIME, str(point.time_ms).encode()),
        ]
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
        sent_ms = int(time.time() * 1000)  # the record's timestamp (what a takeover seeks by)
        delivery = await producer.send(
            self.settings.kafka.topics.raw.name,
            data,
            key=key,
            headers=headers,
            timestamp_ms=sent_ms,
        )

        def delivered(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                durable.failed(KafkaError("delivery cancelled"))
            elif (error := future.exception()) is not None:
                durable.failed(error)
            else:
                durable.delivered(sequence, event.id, sent_ms)

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


async def read_takeover(settings: Settings) -> Takeover:
    """Where the stream resumes when this worker takes it over: the resume point the newest raw
    record carries, and the SSE ids already written after it (read from each partition from that
    point's time on, less a second for clocks)."""
    topic = settings.kafka.topics.raw.name
    consumer = resume_consumer(settings)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka.topics.raw.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        newest = None
        for tp in partitions:
            if ends[tp] == 0:
                continue
            consumer.seek(tp, ends[tp] - 1)
            for record in await _read(consumer, tp, ends[tp]):
                if newest is None or record.timestamp >= newest.timestamp:
                    newest = record
        if newest is None:
            return Takeover()
        headers = headers_dict(newest.headers)
        if HEADER_RESUME_ID not in headers:  # written before resume points were: its own id
            sse_id = headers.get(HEADER_SSE_ID)
            return Takeover(Durable(None if sse_id is None else sse_id.decode(), newest.timestamp))
        point = Durable(
            headers[HEADER_RESUME_ID].decode() or None, int(headers[HEADER_RESUME_TIME])
        )
        since = await consumer.offsets_for_times(
            {tp: max(0, point.time_ms - 1000) for tp in partitions}
        )
        written: set[str] = set()
        for tp, found in since.items():
            if found is None:
                continue
            consumer.seek(tp, found.offset)
            for record in await _read(consumer, tp, ends[tp]):
                sse_id = headers_dict(record.headers).get(HEADER_SSE_ID)
                if sse_id is not None:
                    written.add(sse_id.decode())
        written.discard(point.id or "")
        return Takeover(point, frozenset(written))
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> list[Any]:
    """The records of ``tp`` from the consumer's position to ``end`` (committed ones only)."""
    records: list[Any] = []
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=10000)
        if not batch.get(tp):
            break  # only transaction markers, or aborted records, are left
        records.extend(batch[tp])
    return records
