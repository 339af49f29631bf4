"""The topics ``up`` creates (with their partitions, replicas and configuration), and what an
operator checks first on the cluster: brokers alive, partitions under-replicated or offline. Both
through Kafka's admin API, whoever runs the brokers."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.config import Settings
from app.config.clients import aiokafka_options
from app.config.names import typed_topics
from infra.processes import InfraError


def topic_specs(settings: Settings) -> list[NewTopic]:
    topics = settings.kafka.topics
    retention = {
        "retention.ms": str(settings.kafka.retention.ms),
        "min.insync.replicas": str(settings.kafka.min_insync_replicas),
    }
    # Raw and dead-letter records are SSE payloads kept verbatim, however large.
    large = {**retention, "max.message.bytes": str(settings.kafka.max_message_bytes)}
    return [
        NewTopic(
            name=topic.name,
            num_partitions=topic.partitions,
            replication_factor=settings.kafka.replication_factor,
            topic_configs=configs,
        )
        for topic, configs in (
            (topics.raw, large),
            *((typed, retention) for typed in typed_topics(settings)),
            (topics.dead_letter, large),
        )
    ]


async def _ensure_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(
        **aiokafka_options(settings.kafka),
        client_id=f"{settings.kafka.client_id}-admin",
        request_timeout_ms=30000,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            # Another process may create them at the same moment: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [spec.name for spec in missing]
    finally:
        await admin.close()


def ensure_topics(settings: Settings) -> list[str]:
    """Create the configured topics that do not exist yet; return the names created."""
    try:
        return asyncio.run(_ensure_topics(settings))
    except KafkaError as error:
        raise InfraError(
            f"could not create the topics on {settings.kafka.bootstrap_servers}: {error}"
        ) from None


@dataclass(frozen=True)
class ClusterHealth:
    """What an operator checks first on a Kafka cluster, from its metadata."""

    brokers: int  # alive: registered with the controllers and unfenced
    topics: list[str]
    under_replicated: int  # partitions (of every topic) with fewer in-sync replicas than replicas
    offline: int  # partitions without a leader: unreadable and unwritable

    @property
    def sound(self) -> bool:
        return self.under_replicated == 0 and self.offline == 0

    def describe(self) -> str:
        return (
            f"{self.brokers} broker(s) alive, {self.under_replicated} under-replicated and "
            f"{self.offline} offline partition(s)"
        )


async def _cluster_health(settings: Settings) -> ClusterHealth:
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka), request_timeout_ms=5000)
    await admin.start()
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        topics = await admin.describe_topics()
    finally:
        await admin.close()
    partitions = [partition for topic in topics for partition in topic["partitions"]]
    return ClusterHealth(
        brokers=len(brokers),
        topics=sorted(topic["topic"] for topic in topics),
        under_replicated=sum(len(p["isr"]) < len(p["replicas"]) for p in partitions),
        offline=sum(p["leader"] < 0 for p in partitions),
    )


def cluster_health(settings: Settings) -> ClusterHealth:
    return asyncio.run(_cluster_health(settings))


async def _list_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka), request_timeout_ms=5000)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


def list_topics(settings: Settings) -> list[str]:
    return asyncio.run(_list_topics(settings))
