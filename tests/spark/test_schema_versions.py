"""The job reads only the schema version it knows: records of another version, or with no version
header, are never aggregated and are counted in ``pipeline_batches.unknown_schema_rows``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from pyspark.sql import SparkSession

from app.config import Settings
from app.normalize.batch import encode_typed
from infra.home import Home
from infra.spark_job import LocalSparkJob
from spark.job import run
from tests.events import synthetic
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import (
    batches,
    golden,
    produce,
    typed_events,
    user_edit_counts,
    wiki_activity,
)

pytestmark = pytest.mark.integration

RECEIVED = datetime(2026, 7, 2, tzinfo=UTC)
START = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
#: A future contract's headers, on bodies that look exactly like version 1's.
VERSION_99 = [("schema", b"wikipulse/recentchange/99"), ("schema-version", b"99")]
#: The right version under another schema's name is not ours either.
WRONG_NAME = [("schema", b"someone/else/1"), ("schema-version", b"1")]


async def _send(
    settings: Settings, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        transactional_id=f"schema-test-{uuid.uuid4().hex[:8]}",
        enable_idempotence=True,
        acks="all",
    )
    await producer.start()
    try:
        async with producer.transaction():
            for key, value, headers in records:
                await producer.send(
                    settings.kafka.topics.typed.name, value, key=key, headers=headers
                )
    finally:
        await producer.stop()


def test_records_of_an_unknown_version_change_no_aggregate_and_are_counted(
    spark: SparkSession, job_settings: JobSettings
) -> None:
    settings = job_settings()
    raw = tuple(synthetic(300, seed=1999, start=START, rate=4.0))
    events = typed_events(raw, received_at=RECEIVED)
    produce(settings, events)  # version 1, with its headers, as the worker writes it
    # Copies of real events under new ids: were they read as version 1, every count would grow.
    strangers = [
        event.model_copy(update={"event_id": f"stranger-{index}"})
        for index, event in enumerate(events[:45])
    ]
    records = [
        (event.kafka_key(), encode_typed(event), headers)
        for event, headers in zip(
            strangers, [VERSION_99] * 25 + [[]] * 12 + [WRONG_NAME] * 8, strict=True
        )
    ]
    asyncio.run(_send(settings, records))

    run(spark, settings, available_now=True, retention=False)

    expected_users, expected_wikis = golden(raw, window=settings.spark.windowing.duration)
    assert user_edit_counts(settings) == expected_users
    assert wiki_activity(settings) == expected_wikis
    done = [batch for batch in batches(settings) if batch["input_rows"]]
    assert sum(batch["input_rows"] for batch in done) == len(events) + 45
    assert sum(batch["unknown_schema_rows"] for batch in done) == 25 + 12 + 8
    # `./infra/wikipulse status` says so.
    status = LocalSparkJob(settings, Home(settings.home)).last_batch()
    assert "; 45 records of an unknown schema version skipped" in status


def test_a_topic_of_version_1_only_counts_no_unknown_record(
    spark: SparkSession, job_settings: JobSettings
) -> None:
    settings = job_settings()
    raw = tuple(synthetic(60, seed=2000, start=START, rate=4.0))
    produce(settings, typed_events(raw, received_at=RECEIVED))
    run(spark, settings, available_now=True, retention=False)
    done = [batch for batch in batches(settings) if batch["input_rows"]]
    assert [batch["unknown_schema_rows"] for batch in done] == [0] * len(done) and done
