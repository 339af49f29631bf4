"""Moving from version 1 to version 2 of the typed event, as app/README.md ("Evolving the
contract") tells a user to, through the real worker, Kafka and Spark:

1. the worker writes version 1; the Spark job reads it;
2. a second worker (its own app id, ``APP_TYPED_VERSIONS=[2]``, no SSE) rebuilds version 2 from
   the raw log's beginning while version 1 keeps flowing (more events arrive meanwhile);
3. the Spark job moves to version 2 (``SPARK_SCHEMA_VERSION=2``: a new checkpoint and query
   name) over the same tables: not one row changes, not even its ``updated_at``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pyspark.sql import SparkSession

from app.config import Settings, load_settings
from app.config.names import query_name
from app.contract import HEADER_RECEIVED_AT, V1, V2
from infra.kafka import ensure_topics
from infra.processes import free_port
from spark.job import run
from tests.events import synthetic
from tests.harness import pipeline_environment, read_topic, running_worker, wait_until
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import batches, golden, snapshot, user_edit_counts, wiki_activity

pytestmark = pytest.mark.integration

START = datetime(2026, 8, 3, 12, 0, tzinfo=UTC)
TABLES = ("user_edit_counts", "wiki_activity")


async def _append_raw(settings: Settings, events: list[bytes]) -> None:
    """Raw records as the worker's ingestion writes them (keyed by meta.id, received-at)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        stamp = str(int(time.time() * 1000)).encode()
        for data in events:
            key = orjson.loads(data)["meta"]["id"].encode()
            await producer.send(
                settings.kafka.topics.raw.name, data, key=key, headers=[(HEADER_RECEIVED_AT, stamp)]
            )
        await producer.flush()
    finally:
        await producer.stop()


def changes(events: list[bytes]) -> list[bytes]:
    """What the typed topics must hold: each change once, no canary."""
    seen: set[str] = set()
    kept = []
    for data in events:
        meta = orjson.loads(data)["meta"]
        if meta["domain"] != "canary" and meta["id"] not in seen:
            seen.add(meta["id"])
            kept.append(data)
    return kept


def typed_records(settings: Settings, version: int) -> list:
    topic = settings.kafka.topics.typed if version == 1 else settings.kafka.topics.typed_v2
    return asyncio.run(read_topic(settings, topic.name, topic.partitions))


def test_version_1_to_2_rebuilt_from_the_raw_log_gives_the_same_aggregates(
    spark: SparkSession, job_settings: JobSettings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    # A worker configuration of its own (unique topics and app id), without the SSE connection.
    worker_v1 = pipeline_environment(
        stack_env,
        "http://127.0.0.1:9/unused",
        INGESTION_ENABLED="false",
        KAFKA_TOPICS_TYPED_V2_NAME=f"migration-{uuid.uuid4().hex[:8]}.v2",
    )
    topics = {key: value for key, value in worker_v1.items() if key.startswith("KAFKA_TOPICS_")}
    worker_v2 = {**worker_v1, "APP_ID": worker_v1["APP_ID"] + "-v2", "APP_TYPED_VERSIONS": "[2]",
                 "APP_WEB_PORT": str(free_port())}  # fmt: skip
    settings = job_settings(**topics)  # the Spark job on version 1, a fresh database
    same_place = {"POSTGRES_DATABASE": settings.postgres.database,
                  "SPARK_CHECKPOINT_LOCATION": settings.checkpoint_location}  # fmt: skip
    settings_v2 = load_settings(
        environ={**stack_env, **topics, **same_place, "SPARK_SCHEMA_VERSION": "2"}
    )
    ensure_topics(load_settings(environ=worker_v2))  # version 2's topic

    # Repeats and canaries: the rebuild's deduplication must agree with the first worker's.
    first = synthetic(500, seed=314, start=START, rate=5.0, duplicate_rate=0.05,
                      canary_interval=timedelta(seconds=30))  # fmt: skip
    later = synthetic(300, seed=315, start=START + timedelta(seconds=100), rate=5.0,
                      duplicate_rate=0.05, canary_interval=timedelta(seconds=30))  # fmt: skip
    asyncio.run(_append_raw(settings, first))
    with running_worker(worker_v1, tmp_path / "worker-v1.log") as worker:
        wait_until(lambda: len(typed_records(settings, 1)) >= len(changes(first)), 180,
                   "version 1 of the first events", worker=worker)  # fmt: skip
        run(spark, settings, available_now=True, retention=False)

        # The rebuild runs while version 1 keeps flowing: more raw events arrive meanwhile.
        with running_worker(worker_v2, tmp_path / "worker-v2.log") as rebuild:
            asyncio.run(_append_raw(settings, later))
            expected = changes(first + later)
            wait_until(lambda: len(typed_records(settings, 2)) >= len(expected), 180,
                       "version 2 rebuilt from the raw log", worker=rebuild)  # fmt: skip
        wait_until(lambda: len(typed_records(settings, 1)) >= len(expected), 180,
                   "version 1 of every event", worker=worker)  # fmt: skip

    # Both topics hold every change once, each record under its version's headers.
    ids = {orjson.loads(data)["meta"]["id"] for data in expected}
    for version, contract in ((1, V1), (2, V2)):
        records = typed_records(settings, version)
        counted = Counter(orjson.loads(record.value)["event_id"] for record in records)
        assert set(counted) == ids and max(counted.values()) == 1, version
        assert {tuple(dict(r.headers)[k] for k, _ in contract.headers) for r in records} == {
            tuple(value for _, value in contract.headers)
        }
    editor = orjson.loads(typed_records(settings, 2)[0].value)["editor"]
    assert set(editor) == {"name", "kind", "bot"}

    run(spark, settings, available_now=True, retention=False)  # version 1, all events
    users, wikis = golden(tuple(expected), window=settings.spark.windowing.duration)
    assert user_edit_counts(settings) == users and wiki_activity(settings) == wikis
    before = {table: snapshot(settings, table) for table in TABLES}

    run(spark, settings_v2, available_now=True, retention=False)  # the switch
    assert {table: snapshot(settings, table) for table in TABLES} == before  # even updated_at
    by_query = Counter(batch["query_name"] for batch in batches(settings))
    assert set(by_query) == {query_name(settings), query_name(settings_v2)}
    v2_batches = [b for b in batches(settings) if b["query_name"] == query_name(settings_v2)]
    assert sum(b["input_rows"] or 0 for b in v2_batches) == len(expected)
    assert all(not b["unknown_schema_rows"] for b in v2_batches)
