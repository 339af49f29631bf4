"""Every name derived from the configuration, in one place.

The worker, the Spark job, ``infra/`` (status, lag, ``down --purge``) and the tests all read them
here, so a name cannot drift between the code that makes a thing and the code that looks for it.
"""

from __future__ import annotations

from pathlib import Path

from app.config.settings import Settings, TopicSettings

#: The Spark streaming query: its checkpoint's sub-directory and its pipeline_batches rows.
QUERY_NAME = "wikipulse_aggregates"


def normalizer_group(settings: Settings) -> str:
    """The normalizer's consumer group over the raw topic."""
    return f"{settings.app.id}-normalizer"


def normalizer_transactional_id(settings: Settings, raw_topic: str, partition: int) -> str:
    """One transactional producer per raw partition: a successor fences its predecessor."""
    return f"{settings.app.id}-normalizer-{raw_topic}-{partition}"


def dedup_changelog_topic(settings: Settings) -> str:
    """The compacted topic holding the normalizer's dedup state."""
    return f"{settings.app.id}-dedup-changelog"


def client_id(settings: Settings, role: str) -> str:
    """The Kafka client id of one of our clients (``worker``, ``normalizer``, ``admin``, …)."""
    return f"{settings.kafka.client_id}-{role}"


def worker_datadir(settings: Settings) -> Path:
    """Faust's data directory for the worker of ``app.id``."""
    return settings.home / "worker" / settings.app.id


def typed_topic(settings: Settings, version: int) -> TopicSettings:
    """The topic of one version of the typed event."""
    topics = settings.kafka.topics
    return {1: topics.typed, 2: topics.typed_v2}[version]


def typed_topics(settings: Settings) -> list[TopicSettings]:
    """Every typed topic in use: those the worker writes and the one the Spark job reads."""
    versions = sorted({*settings.app.typed_versions, settings.spark.schema_version})
    return [typed_topic(settings, version) for version in versions]


def spark_source(settings: Settings) -> TopicSettings:
    """The typed topic the Spark job reads: that of ``spark.schema_version``."""
    return typed_topic(settings, settings.spark.schema_version)


def query_name(settings: Settings) -> str:
    """The streaming query's name (its checkpoint's sub-directory and its pipeline_batches
    rows): one per version it reads, so moving to another version starts a new checkpoint."""
    version = settings.spark.schema_version
    return QUERY_NAME if version == 1 else f"{QUERY_NAME}_v{version}"


def spark_checkpoint(settings: Settings) -> str:
    """The query's checkpoint: ``<spark.checkpoint.location>/<query name>``."""
    return f"{settings.checkpoint_location.rstrip('/')}/{query_name(settings)}"
