"""A worker taking the stream over from a dead one, on a raw topic of three partitions.

The dead worker's deliveries to different partitions completed in any order: its last batch to
one partition was lost while later events reached the others. Its successor must serve the lost
events again, and must not write again what is already in the raw log.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.config import Settings, load_settings
from app.contract import HEADER_RESUME_ID, HEADER_RESUME_TIME, HEADER_SSE_ID
from app.ingest.resume import Durable
from app.ingest.task import ingest_producer, raw_key, read_takeover
from infra.replay.server import ReplayOptions
from infra.replay.wire import event_id, parse_last_event_id
from infra.stack import Stack
from tests.events import synthetic
from tests.harness import ReplayThread, pipeline_environment, read_topic, running_worker, wait_until

pytestmark = pytest.mark.integration

EVENTS = 60
#: The dead worker had sent events 0..39; event 30 and every later one to its partition were
#: still in flight when it died, so its resume point stood at event 29.
SENT, LOST_FROM = 40, 30
STEP_MS = 100  # between two of its sends


def stream_position(sse_id: str) -> int:
    """The stream position an SSE id of the replay server names."""
    resume_at = parse_last_event_id(sse_id)
    assert isinstance(resume_at, int), sse_id
    return resume_at - 1


async def write_dead_workers_log(
    settings: Settings, events: list[bytes], base_ms: int
) -> tuple[set[int], int]:
    """The raw log the dead worker left (as its ingest producer writes it): the positions
    written, and the partition whose last batch was lost."""
    partitions = list(range(settings.kafka.topics.raw.partitions))
    lost_partition = DefaultPartitioner()(raw_key(events[LOST_FROM]), partitions, partitions)
    producer = ingest_producer(settings)
    await producer.start()
    written = set()
    try:
        for position in range(SENT):
            key = raw_key(events[position])
            partition = DefaultPartitioner()(key, partitions, partitions)
            if position >= LOST_FROM and partition == lost_partition:
                continue
            durable = min(position, LOST_FROM) - 1  # every earlier delivery had completed
            resume = (event_id(durable), base_ms + durable * STEP_MS) if durable >= 0 else ("", 0)
            await producer.send_and_wait(
                settings.kafka.topics.raw.name, events[position], key=key,
                timestamp_ms=base_ms + position * STEP_MS,
                headers=[(HEADER_SSE_ID, event_id(position).encode()),
                         (HEADER_RESUME_ID, resume[0].encode()),
                         (HEADER_RESUME_TIME, str(resume[1]).encode())],
            )  # fmt: skip
            written.add(position)
    finally:
        await producer.stop()
    return written, lost_partition


def test_the_successor_resumes_before_the_lost_batch_and_writes_nothing_twice(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    events = synthetic(EVENTS, seed=15)
    meta_ids = [orjson.loads(e)["meta"]["id"] for e in events]
    with ReplayThread(events, ReplayOptions(hold_open=True)) as replay:
        env = pipeline_environment(stack_env, replay.url, KAFKA_TOPICS_RAW_PARTITIONS="3")
        settings = load_settings(environ=env)
        raw = settings.kafka.topics.raw
        base_ms = int(time.time() * 1000) - 60_000
        written, lost_partition = asyncio.run(write_dead_workers_log(settings, events, base_ms))
        lost = set(range(SENT)) - written
        assert LOST_FROM in lost and len(written) > LOST_FROM, (lost, lost_partition)

        takeover = asyncio.run(read_takeover(settings))
        last_durable = LOST_FROM - 1
        assert takeover.point == Durable(event_id(last_durable), base_ms + last_durable * STEP_MS)
        after = {event_id(p) for p in written if p > last_durable}
        # What it read back from the point's time (less a second) on: the 10 events before too.
        assert takeover.written == after | {event_id(p) for p in range(19, last_durable)}

        typed = settings.kafka.topics.typed
        with running_worker(env, tmp_path / "successor.log") as successor:
            wait_until(
                lambda: (
                    len(asyncio.run(read_topic(settings, typed.name, typed.partitions))) >= EVENTS
                ),
                120,
                "every event typed",
                worker=successor,
            )
        assert replay.server.requests[0][0] == event_id(last_durable)

    records = asyncio.run(read_topic(settings, raw.name, raw.partitions))
    positions = Counter(stream_position(dict(r.headers)[HEADER_SSE_ID].decode()) for r in records)
    assert positions == Counter(range(EVENTS)), "each event in the raw log once"
    for record in records:
        at = stream_position(dict(record.headers)[HEADER_SSE_ID].decode())
        if at in written:
            continue
        # The successor's records: each names a resume point before itself, at or after the
        # one it took over from.
        resume = dict(record.headers)[HEADER_RESUME_ID].decode()
        assert last_durable <= stream_position(resume) < at, (at, resume)
    typed_ids = Counter(
        orjson.loads(r.value)["event_id"]
        for r in asyncio.run(read_topic(settings, typed.name, typed.partitions))
    )
    assert typed_ids == Counter(meta_ids), "each event in the typed topic once"
