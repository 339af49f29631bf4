"""The local broker started by infra (KRaft, one node): topics from config, produce, consume."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.config import Settings
from infra.stack import Stack

pytestmark = pytest.mark.integration


async def test_topics_exist_with_configured_partitions(
    stack: Stack, stack_settings: Settings
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack_settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        topics = stack_settings.kafka.topics
        expected = {t.name: t.partitions for t in (topics.raw, topics.typed, topics.dead_letter)}
        described = await admin.describe_topics(list(expected))
        partitions = {d["topic"]: len(d["partitions"]) for d in described}
        assert partitions == expected
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topics.raw.name)]
        )
        entries = {c[0]: c[1] for c in configs[0].resources[0][4]}
        assert entries["retention.ms"] == str(stack_settings.kafka.retention.ms)
    finally:
        await admin.close()


async def test_produce_and_consume_through_the_local_broker(
    stack: Stack, stack_settings: Settings
) -> None:
    topic = stack_settings.kafka.topics.typed.name
    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(
        bootstrap_servers=stack_settings.kafka.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
    )
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait(topic, key=b"page-%d" % i, value=marker + b"-%d" % i)
            for i in range(5)
        ]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack_settings.kafka.bootstrap_servers,
        group_id=f"test-{marker.decode()}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        received: list[ConsumerRecord[bytes, bytes]] = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=1000)
            received += [
                m for messages in batch.values() for m in messages if m.value.startswith(marker)
            ]
            if len(received) == 5:
                break
    finally:
        await consumer.stop()
    # Each record once, with its key, at the partition and offset the broker acknowledged.
    assert sorted((m.partition, m.offset, m.key, m.value) for m in received) == sorted(
        (r.partition, r.offset, b"page-%d" % i, marker + b"-%d" % i) for i, r in enumerate(sent)
    )
