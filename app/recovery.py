"""Exactly-once output of the normalizer, on top of Faust's at-least-once processing.

Faust commits a raw offset only after every record sent before it is durable (it flushes the
producer first). After a crash the normalizer therefore re-reads raw records from the last
committed offset, some of which already have their output in the typed or dead-letter topic.
Every output record names its origin (``origin-partition``, ``origin-offset`` headers), so
before re-processing from offset ``n`` the normalizer reads the tails of its output topics and
collects the origins >= ``n`` already written: those are not written again.

(Faust's own ``exactly_once`` guarantee covers only sink topics co-partitioned with the source:
sends to other partitions leave its transactions. The typed topic has more partitions than the
raw topic, so it cannot be used here.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.settings import Settings

log = logging.getLogger(__name__)

HEADER_ORIGIN_TOPIC = "origin-topic"
HEADER_ORIGIN_PARTITION = "origin-partition"
HEADER_ORIGIN_OFFSET = "origin-offset"

#: Records read per step when scanning an output partition backwards.
SCAN_CHUNK = 5000


def origin_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        (HEADER_ORIGIN_TOPIC, topic.encode()),
        (HEADER_ORIGIN_PARTITION, str(partition).encode()),
        (HEADER_ORIGIN_OFFSET, str(offset).encode()),
    ]


def _origin(headers: Iterable[tuple[str, bytes]], topic: str) -> tuple[int, int] | None:
    found = dict(headers or ())
    if found.get(HEADER_ORIGIN_TOPIC) != topic.encode():
        return None
    try:
        return int(found[HEADER_ORIGIN_PARTITION]), int(found[HEADER_ORIGIN_OFFSET])
    except (KeyError, ValueError):
        return None


async def emitted_origins(
    settings: Settings, *, source_topic: str, source_partition: int, from_offset: int
) -> set[int]:
    """Offsets >= ``from_offset`` of ``source_topic[source_partition]`` that already have an
    output record in the typed or the dead-letter topic."""
    topics = settings.kafka.topics
    outputs = [
        TopicPartition(topic.name, partition)
        for topic in (topics.typed, topics.dead_letter)
        for partition in range(topic.partitions)
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-recovery",
        enable_auto_commit=False,
    )
    await consumer.start()
    emitted: set[int] = set()
    try:
        consumer.assign(outputs)
        ends = await consumer.end_offsets(outputs)
        for tp in outputs:
            emitted |= await _scan_back(
                consumer, tp, ends[tp], source_topic, source_partition, from_offset
            )
    finally:
        await consumer.stop()
    if emitted:
        log.info(
            "recovery: %d records of %s[%d] from offset %d are already written; not again",
            len(emitted),
            source_topic,
            source_partition,
            from_offset,
        )
    return emitted


async def _scan_back(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    end: int,
    source_topic: str,
    source_partition: int,
    from_offset: int,
) -> set[int]:
    """Read ``tp`` backwards in chunks until an origin below ``from_offset`` shows up.

    Within one output partition the origins of one source partition increase with the offset
    (the normalizer processes a source partition in order; the producer is idempotent)."""
    found: set[int] = set()
    high = end
    while high > 0:
        low = max(0, high - SCAN_CHUNK)
        consumer.seek(tp, low)
        reached_older = False
        position = low
        while position < high:
            batch = await consumer.getmany(tp, timeout_ms=2000)
            records = batch.get(tp, [])
            if not records:
                position = await consumer.position(tp)
                if position >= high:
                    break
                continue
            for record in records:
                if record.offset >= high:
                    break
                origin = _origin(record.headers, source_topic)
                if origin is None or origin[0] != source_partition:
                    continue
                if origin[1] >= from_offset:
                    found.add(origin[1])
                else:
                    reached_older = True
            position = records[-1].offset + 1
        if reached_older:
            break
        high = low
    return found
