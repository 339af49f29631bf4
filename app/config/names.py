"""Every name derived from the configuration, in one place.

The worker, the Spark job, ``infra/`` (status, lag, ``down --purge``) and the tests all read them
here, so a name cannot drift between the code that makes a thing and the code that looks for it.
"""

from __future__ import annotations

from pathlib import Path

from app.config.settings import Settings

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


def spark_checkpoint(settings: Settings) -> str:
    """The query's checkpoint: ``<spark.checkpoint.location>/<query name>``."""
    return f"{settings.checkpoint_location.rstrip('/')}/{QUERY_NAME}"
