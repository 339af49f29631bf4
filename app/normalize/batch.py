"""raw -> typed | dead letter, one batch at a time: what a batch of raw records becomes. No I/O.

:func:`plan_batch` turns one batch of one raw partition's records into its outcomes, in order:
the typed and dead-letter records to write, the dedup changelog record, and what to apply to the
in-memory state and metrics once the batch is committed (:class:`Batch`). The Kafka side, one
transaction per batch, is :mod:`app.normalize.service`.

Deduplication on ``meta.id`` is kept per raw partition over ``ingestion.dedup.window`` (by
processing time, so a rebuild over an old log still drops repeats): :class:`DedupState`. Its
changelog is a compacted topic, ``<app.id>-dedup-changelog``, partitioned like the raw topic: one
record per batch (key ``<partition>:<first offset>``, value the batch's new ids and time), a
tombstone when the batch leaves the window. A partition's state is read back from it when the
partition is assigned (:meth:`DedupState.restore`), so it survives restarts, and what an aborted
transaction wrote is never read back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from app.config.names import dedup_changelog_topic, typed_topic
from app.config.settings import Settings
from app.contract import (
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
    HEADER_REASON,
    HEADER_REASON_CODE,
    HEADER_REASON_FIELD,
    HEADER_RECEIVED_AT,
    HEADER_SSE_ID,
    HEADER_TRUNCATED_FROM,
    Canary,
    Contract,
    Outcome,
    RecentChange,
    RecentChangeV2,
    contract,
)
from app.normalize.event import Filters, RejectCode, Rejected, normalize

log = logging.getLogger(__name__)

#: The raw record's headers a dead letter carries on.
KEPT_HEADERS = (HEADER_SSE_ID, HEADER_RECEIVED_AT, HEADER_TRUNCATED_FROM)


def origin_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        (HEADER_ORIGIN_TOPIC, topic.encode()),
        (HEADER_ORIGIN_PARTITION, str(partition).encode()),
        (HEADER_ORIGIN_OFFSET, str(offset).encode()),
    ]


def encode_typed(event: RecentChange | RecentChangeV2) -> bytes:
    return orjson.dumps(event.model_dump())


def received_at(headers: dict[str, bytes]) -> datetime:
    raw = headers.get(HEADER_RECEIVED_AT)
    if raw:
        try:
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def truncated(headers: dict[str, bytes], data: bytes, max_bytes: int) -> Rejected | None:
    """A raw record the ingest task cut to fit in Kafka is too large, whatever its head looks
    like: its reason gives the event's size as received, not the size kept."""
    size = headers.get(HEADER_TRUNCATED_FROM)
    if size is None:
        return None
    return Rejected(
        RejectCode.TOO_LARGE,
        f"{size.decode(errors='replace')} bytes (truncated to {len(data)} in the raw topic), "
        f"the limit is {max_bytes}",
    )


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
    #: (contract, topic) of each version the worker writes (``app.typed_versions``).
    typed_versions: tuple[tuple[Contract, str], ...]
    dead_letter: str
    changelog: str

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        topics = settings.kafka.topics
        return cls(
            raw=topics.raw.name,
            typed_versions=tuple(
                (contract(version), typed_topic(settings, version).name)
                for version in settings.app.typed_versions
            ),
            dead_letter=topics.dead_letter.name,
            changelog=dedup_changelog_topic(settings),
        )

    @property
    def typed(self) -> str:
        """The topic of the first version written."""
        return self.typed_versions[0][1]


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
        rejection = truncated(headers, data, max_bytes)
        if rejection is None:
            try:
                result = normalize(data, received_at=received_at(headers), max_bytes=max_bytes)
            except Rejected as error:
                rejection = error
        if rejection is not None:
            kept = [(k, v) for k, v in headers.items() if k in KEPT_HEADERS]
            batch.outputs.append(
                Output(
                    topics.dead_letter,
                    None,
                    data,
                    [
                        (HEADER_REASON, str(rejection).encode()),
                        (HEADER_REASON_CODE, rejection.code.encode()),
                        (HEADER_REASON_FIELD, (rejection.field or "").encode()),
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
        key = result.kafka_key()
        for typed, topic in topics.typed_versions:
            value = encode_typed(typed.event(result))
            batch.outputs.append(Output(topic, key, value, [*typed.headers, *origin]))
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
