"""The ingestion worker: ``faust -A app.worker worker``.

- ``ingest`` (a task, on the leader only: one SSE connection per deployment) follows the SSE
  stream and appends each event's bytes, unparsed, to the raw topic with its SSE id and receive
  time in headers. It resumes after the last event durably in the raw topic.
- ``normalize_raw`` (an agent over the raw topic) turns each raw record into exactly one
  outcome: a typed event, a dead letter, or filtered / duplicate / canary. It runs with Faust's
  exactly-once guarantee: its sends, the dedup table's changelog and the consumer offsets are
  committed in one Kafka transaction.
- The web server serves ``/metrics`` (Prometheus) and ``/health``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from app.config import Settings, get_settings
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
from app.metrics import WorkerMetrics
from app.normalize import Filters, Rejected, normalize
from app.recovery import emitted_origins, origin_headers
from app.sse import SseEvent, SseSource, user_agent

log = logging.getLogger(__name__)

DEDUP_TABLE = "seen-event-ids"
#: Room for a raw record's headers and batch framing below kafka.max_message_bytes.
RECORD_OVERHEAD = 64 * 1024
HEADER_TRUNCATED_FROM = "truncated-from"
TYPED_HEADERS = (
    (HEADER_SCHEMA, SCHEMA_NAME.encode()),
    (HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION).encode()),
)
#: How often the normalizer forgets event ids older than the dedup window.
DEDUP_PURGE_INTERVAL = 60.0


def headers_dict(headers: Any) -> dict[str, bytes]:
    if not headers:
        return {}
    items: Iterable[tuple[str, bytes]] = headers.items() if isinstance(headers, dict) else headers
    return {key: value for key, value in items}


@dataclass
class HealthState:
    connected: bool = False
    last_received: float | None = None  # monotonic-independent: epoch seconds
    last_canary: float | None = None
    last_event_time: float | None = None

    ingesting: bool = True  # False: a normalizer-only worker (no SSE), healthy while it runs

    def healthy(self, timeout: float, now: float | None = None) -> bool:
        if not self.ingesting:
            return True
        now = time.time() if now is None else now
        recent = [t for t in (self.last_received, self.last_canary) if t is not None]
        return self.connected and bool(recent) and now - max(recent) <= timeout


@dataclass
class Routed:
    """The outcome of one raw record and what to write for it."""

    outcome: Outcome
    event: RecentChange | None = None
    rejection: Rejected | None = None
    canary: Canary | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def route(
    data: bytes,
    *,
    received_at: datetime,
    filters: Filters,
    seen: Any,
    max_bytes: int,
    origin: tuple[int, int] = (-1, -1),
) -> Routed:
    """Decide the outcome of one raw record (pure but for the ``seen`` mapping it reads).

    ``seen`` maps event ids to where they were first seen, ``[partition, offset, time]``; an
    event seen at its own ``origin`` (partition, offset) is being re-processed after a crash,
    not repeated by the stream."""
    try:
        result = normalize(data, received_at=received_at, max_bytes=max_bytes)
    except Rejected as rejection:
        return Routed(Outcome.DEAD_LETTER, rejection=rejection)
    if isinstance(result, Canary):
        return Routed(Outcome.CANARY, canary=result)
    if not filters.accept(result):
        return Routed(Outcome.FILTERED, event=result)
    first = seen.get(result.event_id)
    if first is not None and tuple(first[:2]) != origin:
        return Routed(Outcome.DUPLICATE, event=result)
    return Routed(Outcome.VALID, event=result)


def encode_typed(event: RecentChange) -> bytes:
    return orjson.dumps(event.model_dump())


def _received_at(headers: dict[str, bytes]) -> datetime:
    raw = headers.get(HEADER_RECEIVED_AT)
    if raw:
        try:
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


class Worker:
    """The Faust app and everything it shares: settings, metrics, health."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.health = HealthState(ingesting=settings.ingestion.enabled)
        ingestion = settings.ingestion
        self.filters = Filters(
            namespaces=frozenset(ingestion.wikimedia.filters.namespaces),
            wikis=frozenset(ingestion.wikimedia.filters.wikis),
            types=frozenset(ingestion.wikimedia.filters.types),
        )
        topics = settings.kafka.topics
        producer = settings.kafka.producer
        datadir = settings.home / "worker" / settings.app.id
        datadir.parent.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.app.id,
            broker=[f"kafka://{host}:{port}" for host, port in settings.kafka.servers],
            broker_client_id=f"{settings.kafka.client_id}-worker",
            # At least once, made exactly once for the output topics by app/recovery.py.
            processing_guarantee="at_least_once",
            store="memory://",
            topic_partitions=topics.raw.partitions,
            topic_replication_factor=settings.kafka.replication_factor,
            producer_acks=-1,
            producer_compression_type=None
            if producer.compression == "none"
            else producer.compression,
            producer_linger_ms=producer.linger_ms,
            producer_max_batch_size=producer.batch_size,
            producer_max_request_size=settings.kafka.max_message_bytes,
            consumer_auto_offset_reset="earliest",
            datadir=str(datadir),
            web_enabled=True,
            web_bind=settings.app.web.host,
            web_host=settings.app.web.host,
            web_port=settings.app.web.port,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.raw_topic = self.app.topic(
            topics.raw.name, partitions=topics.raw.partitions, internal=False
        )
        self.typed_topic = self.app.topic(topics.typed.name, partitions=topics.typed.partitions)
        self.dead_letter_topic = self.app.topic(
            topics.dead_letter.name, partitions=topics.dead_letter.partitions
        )
        # meta.id -> where it was first seen and when it was processed: [raw partition, raw
        # offset, epoch s] (processing time: a rebuild over an old log still dedups);
        # changelog-backed, so it survives restarts. Partitioned like the raw topic.
        self.seen = self.app.Table(
            DEDUP_TABLE,
            default=None,
            partitions=topics.raw.partitions,
            key_type=str,
        )
        self._last_purge = 0.0
        # Per raw partition: the next offset expected, and origins already written (recovery).
        self._next_offset: dict[tuple[str, int], int] = {}
        self._written: dict[tuple[str, int], set[int]] = {}
        self._install()

    # ---- wiring -----------------------------------------------------------------------------

    def _install(self) -> None:
        app = self.app
        if self.settings.ingestion.enabled:
            # On the leader only: one SSE connection per deployment, however many workers.
            app.task(self.ingest, on_leader=True)
        app.agent(self.raw_topic, name="normalize-raw")(self.normalize_raw)

        # Faust makes a View class of each function; it is called with the view and request.
        async def metrics(view: Any, request: Any) -> Any:
            return view.bytes(self.metrics.exposition(), content_type="text/plain; version=0.0.4")

        async def health(view: Any, request: Any) -> Any:
            body = self.health_report()
            return view.json(body, status=200 if body["healthy"] else 503)

        app.page("/metrics")(metrics)
        app.page("/health")(health)

    def health_report(self) -> dict[str, Any]:
        timeout = self.settings.ingestion.health_timeout.total_seconds()
        return {
            "healthy": self.health.healthy(timeout),
            "connected": self.health.connected,
            "last_received": self.health.last_received,
            "last_canary": self.health.last_canary,
            "last_event_time": self.health.last_event_time,
            "outcomes": self.metrics.outcome_totals(),
        }

    # ---- ingest: SSE -> raw -----------------------------------------------------------------

    async def last_raw_sse_id(self) -> str | None:
        """The SSE id of the newest record in the raw topic (what Last-Event-ID resumes from)."""
        return await read_last_sse_id(self.settings)

    async def ingest(self) -> None:
        settings = self.settings
        ingestion = settings.ingestion
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            client_id=f"{settings.kafka.client_id}-ingest",
            acks="all",
            enable_idempotence=True,
            compression_type=None
            if settings.kafka.producer.compression == "none"
            else settings.kafka.producer.compression,
            linger_ms=settings.kafka.producer.linger_ms,
            max_batch_size=settings.kafka.producer.batch_size,
            max_request_size=settings.kafka.max_message_bytes,
        )
        await producer.start()
        durable = {"id": await self.last_raw_sse_id()}
        log.info("ingest: resuming after SSE id %s", durable["id"])

        async def resume_id() -> str | None:
            # Everything sent is durable (or failed) before we reconnect.
            await producer.flush()
            return durable["id"]

        def on_reconnect(reason: str) -> None:
            self.health.connected = False
            self.metrics.connected.set(0)
            self.metrics.reconnects.labels(reason=reason).inc()

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
                except KafkaError as error:
                    log.error("ingest: writing to the raw topic failed (%s); reconnecting", error)
                    on_reconnect("kafka_error")
                    await asyncio.sleep(ingestion.backoff.initial.total_seconds())
        finally:
            await source.close()
            await producer.stop()

    async def _append_raw(
        self, producer: AIOKafkaProducer, event: SseEvent, durable: dict[str, str | None]
    ) -> None:
        received_ms = int(event.received_at.timestamp() * 1000)
        headers = [(HEADER_RECEIVED_AT, str(received_ms).encode())]
        if event.id is not None:
            headers.append((HEADER_SSE_ID, event.id.encode()))
        data = event.data
        limit = self.settings.kafka.max_message_bytes - RECORD_OVERHEAD
        if len(data) > limit:
            # Larger than a Kafka record may be: keep its head, say so; the normalizer
            # dead-letters it (too large), and the stream goes on.
            log.warning(
                "ingest: event of %d bytes truncated to %d in the raw log", len(data), limit
            )
            headers.append((HEADER_TRUNCATED_FROM, str(len(data)).encode()))
            data = data[:limit]
        delivery = await producer.send(self.settings.kafka.topics.raw.name, data, headers=headers)

        def delivered(future: asyncio.Future[Any]) -> None:
            # Idempotent producer: deliveries complete in order, so the last success is the
            # newest durable event.
            if not future.cancelled() and future.exception() is None and event.id is not None:
                durable["id"] = event.id

        delivery.add_done_callback(delivered)
        self.metrics.received.inc()
        self.health.last_received = event.received_at.timestamp()
        self.metrics.last_received_time.set(self.health.last_received)

    # ---- normalize: raw -> typed | dead letter ------------------------------------------------

    async def normalize_raw(self, stream: Any) -> None:
        async for event in stream.events():
            await self.process(event.message, event.value or b"")

    async def process(self, message: Any, data: bytes) -> Outcome:
        headers = headers_dict(message.headers)
        received_at = _received_at(headers)
        written = await self._already_written(message)
        routed = route(
            data,
            received_at=received_at,
            filters=self.filters,
            seen=self.seen,
            max_bytes=self.settings.ingestion.max_event_bytes,
            origin=(message.partition, message.offset),
        )
        origin = origin_headers(message.topic, message.partition, message.offset)
        if routed.outcome is Outcome.VALID and routed.event is not None:
            event = routed.event
            self.seen[event.event_id] = [message.partition, message.offset, time.time()]
            if not written:
                await self._send(
                    self.typed_topic.get_topic_name(),
                    event.kafka_key(),
                    encode_typed(event),
                    [*TYPED_HEADERS, *origin],
                )
            event_time = event.event_time.timestamp()
            self.health.last_event_time = event_time
            self.metrics.last_event_time.set(event_time)
            self.metrics.lag.set(max(0.0, time.time() - event_time))
        elif routed.outcome is Outcome.DEAD_LETTER and routed.rejection is not None:
            reason = routed.rejection
            log.info(
                "dead letter %s[%s]@%s: %s",
                message.topic,
                message.partition,
                message.offset,
                reason,
            )
            if not written:
                kept = [
                    (k, v) for k, v in headers.items() if k in (HEADER_SSE_ID, HEADER_RECEIVED_AT)
                ]
                await self._send(
                    self.dead_letter_topic.get_topic_name(),
                    None,
                    data,
                    [
                        ("reason", str(reason).encode()),
                        ("reason-code", reason.code.encode()),
                        ("reason-field", (reason.field or "").encode()),
                        *origin,
                        *kept,
                    ],
                )
        elif routed.outcome is Outcome.CANARY:
            self.health.last_canary = time.time()
            self.metrics.last_canary_time.set(self.health.last_canary)
        self.metrics.count(routed.outcome)
        self._purge_seen()
        return routed.outcome

    async def _send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Hand a record to Faust's producer now (not at the next commit: freshness matters).
        Faust flushes this producer before it commits the raw offsets."""
        await self.app.producer.send(topic, key, value, None, None, headers)

    async def _already_written(self, message: Any) -> bool:
        """Whether this raw record's output is already in the typed or dead-letter topic.

        When the stream jumps (a start, a restart, a rebalance: the offset is not the one after
        the last processed), the output topics' tails are read once to learn what was written
        after the last commit (see app/recovery.py)."""
        key = (message.topic, message.partition)
        if self._next_offset.get(key) != message.offset:
            self._written[key] = await emitted_origins(
                self.settings,
                source_topic=message.topic,
                source_partition=message.partition,
                from_offset=message.offset,
            )
        self._next_offset[key] = message.offset + 1
        written = self._written.get(key)
        if not written:
            return False
        if message.offset in written:
            written.discard(message.offset)
            return True
        return False

    def _purge_seen(self) -> None:
        """Forget event ids older than the dedup window (inside the agent: table writes need
        the current event's transaction)."""
        now = time.time()
        if now - self._last_purge < DEDUP_PURGE_INTERVAL:
            return
        self._last_purge = now
        horizon = now - self.settings.ingestion.dedup.window.total_seconds()
        stale = [key for key, first_seen in self.seen.items() if first_seen[2] < horizon]
        for key in stale:
            del self.seen[key]
        if stale:
            log.info("dedup: forgot %d event ids older than the window", len(stale))


async def read_last_sse_id(settings: Settings) -> str | None:
    """The ``sse-id`` header of the newest record across the raw topic's partitions."""
    topic = settings.kafka.topics.raw.name
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-resume",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
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


def __getattr__(name: str) -> Any:
    """``faust -A app.worker`` looks up ``app``: build it (and load the settings) on first use."""
    if name == "app":
        worker = _default_worker()
        return worker.app
    raise AttributeError(name)


_worker: Worker | None = None


def _default_worker() -> Worker:
    global _worker
    if _worker is None:
        _worker = Worker(get_settings())
    return _worker
