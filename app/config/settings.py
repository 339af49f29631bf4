"""The typed settings of wikipulse: one pydantic model per section of ``conf/conf.yaml``.

Loaded and validated by :mod:`app.config.loading`; every component receives a :class:`Settings`.
The client options built from them (Kafka, PostgreSQL) are in :mod:`app.config.clients`, which
imports this module, never the reverse.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from app.config.values import (
    Duration,
    EventType,
    HttpUrl,
    MemorySize,
    NonEmpty,
    Port,
    PositiveInt,
)
from app.contract.versions import CONTRACTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEVELOPMENT = "development"
#: The profile that refuses the development defaults (app.config.loading).
PRODUCTION = "prod"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# The settings model: one class per section of conf.yaml
# --------------------------------------------------------------------------------------------


#: The layouts ``./infra/wikipulse up`` can run on one machine (infra/README.md).
SINGLE, CLUSTER = "single", "cluster"


class WikipulseSection(_Section):
    home: str
    layout: Literal["single", "cluster"]


class FiltersSettings(_Section):
    namespaces: list[int]
    wikis: list[str]
    types: list[EventType]


class WikimediaSettings(_Section):
    url: HttpUrl
    contact: NonEmpty
    filters: FiltersSettings


class BackoffSettings(_Section):
    initial: Duration
    max: Duration


class DedupSettings(_Section):
    window: Duration
    max_ids: PositiveInt


class IngestionSettings(_Section):
    enabled: bool
    wikimedia: WikimediaSettings
    since: str
    read_timeout: Duration
    backoff: BackoffSettings
    max_event_bytes: PositiveInt
    dedup: DedupSettings
    health_timeout: Duration

    @field_validator("since")
    @classmethod
    def _since_is_a_time(cls, value: str) -> str:
        """Empty, epoch milliseconds, or an ISO-8601 time (what EventStreams' ?since= takes)."""
        text = value.strip()
        if text and not text.isdigit():
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError("not a time: use epoch milliseconds or ISO-8601") from None
            if parsed.tzinfo is None:
                raise ValueError("give the time zone, e.g. 2026-06-20T15:00:00Z")
        return text


class TopicSettings(_Section):
    name: str = Field(min_length=1, max_length=249, pattern=r"^[a-zA-Z0-9._-]+$")
    partitions: PositiveInt


class TopicsSettings(_Section):
    raw: TopicSettings
    typed: TopicSettings  # version 1 of the typed event
    typed_v2: TopicSettings  # version 2
    dead_letter: TopicSettings


class RetentionSettings(_Section):
    ms: Annotated[int, Field(ge=-1)]


class ProducerSettings(_Section):
    batch_size: PositiveInt
    linger_ms: Annotated[int, Field(ge=0)]
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"]


class LocalKafkaSettings(_Section):
    controller_port: Port
    heap: MemorySize


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SaslSettings(_Section):
    mechanism: SaslMechanism
    username: str
    password: SecretStr


class KafkaSslSettings(_Section):
    cafile: str
    certfile: str
    keyfile: str


class KafkaSettings(_Section):
    bootstrap_servers: NonEmpty
    client_id: NonEmpty
    replication_factor: PositiveInt
    min_insync_replicas: PositiveInt
    topics: TopicsSettings
    retention: RetentionSettings
    producer: ProducerSettings
    max_message_bytes: PositiveInt
    managed: Literal["auto"] | bool
    local: LocalKafkaSettings
    security_protocol: KafkaSecurityProtocol
    sasl: SaslSettings
    ssl: KafkaSslSettings

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol.endswith("SSL")

    @property
    def runs_locally(self) -> bool:
        """Whether ./infra/wikipulse starts and stops the broker itself."""
        if self.managed != "auto":
            return bool(self.managed)
        return all(_is_loopback(host) for host, _ in self.servers)

    @property
    def local_nodes(self) -> list[tuple[int, str, int, int]]:
        """The brokers ./infra/wikipulse runs (when :attr:`runs_locally`): one per bootstrap
        server, as (node id, host, broker port, controller port); the controllers listen on
        ``local.controller_port`` and the ports after it."""
        return [
            (index + 1, host, port, self.local.controller_port + index)
            for index, (host, port) in enumerate(self.servers)
        ]

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The bootstrap servers as (host, port) pairs."""
        pairs = []
        for item in self.bootstrap_servers.split(","):
            host, _, port = item.strip().rpartition(":")
            pairs.append((host.strip("[]"), int(port)))
        return pairs


class WindowingSettings(_Section):
    duration: Duration
    watermark: Duration


class TriggerSettings(_Section):
    processing_time: Duration


class CheckpointSettings(_Section):
    location: str


class DriverSettings(_Section):
    memory: MemorySize


class ExecutorSettings(_Section):
    memory: MemorySize
    instances: PositiveInt
    cores: PositiveInt


class LocalSparkSettings(_Section):
    """The standalone cluster ./infra/wikipulse runs when spark.master is spark:// on loopback."""

    workers: PositiveInt
    worker_cores: PositiveInt
    worker_memory: MemorySize
    daemon_heap: MemorySize
    master_ui_port: Port


class SparkSettings(_Section):
    master: NonEmpty
    #: The address the driver (its UI, RPC and block manager) binds to, SPARK_LOCAL_IP;
    #: "": loopback under a local master, Spark's own choice otherwise.
    local_ip: str
    app_name: NonEmpty
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", "TRACE"]
    windowing: WindowingSettings
    trigger: TriggerSettings
    checkpoint: CheckpointSettings
    shuffle_partitions: Annotated[int, Field(ge=0)]
    starting_offsets: Literal["earliest", "latest"]
    max_offsets_per_trigger: Annotated[int, Field(ge=0)]
    #: The version of the typed event the job reads, from that version's topic.
    schema_version: int
    driver: DriverSettings
    executor: ExecutorSettings
    local: LocalSparkSettings

    @field_validator("master")
    @classmethod
    def _standalone_master_has_an_address(cls, value: str) -> str:
        if value.startswith("spark://") and not re.fullmatch(
            r"spark://[^\s:/,]+:\d{1,5}(,[^\s:/,]+:\d{1,5})*", value
        ):
            raise ValueError("a standalone master is spark://host:port[,host:port...]")
        return value

    @property
    def standalone_master(self) -> tuple[str, int] | None:
        """(host, port) of a single standalone master (``spark://host:port``), else None."""
        match = re.fullmatch(r"spark://([^:,]+):(\d+)", self.master)
        return (match[1], int(match[2])) if match else None

    @property
    def runs_local_cluster(self) -> bool:
        """Whether ./infra/wikipulse runs the standalone master and its workers itself: a single
        ``spark://`` master on a loopback address (the cluster layout)."""
        master = self.standalone_master
        return master is not None and _is_loopback(master[0])

    @field_validator("schema_version")
    @classmethod
    def _schema_version_is_known(cls, value: int) -> int:
        return _known_versions([value])[0]

    @field_validator("local_ip")
    @classmethod
    def _local_ip_is_an_address(cls, value: str) -> str:
        if value:
            ipaddress.ip_address(value)  # its ValueError names the value
        return value

    @property
    def effective_shuffle_partitions(self) -> int:
        return self.shuffle_partitions or os.cpu_count() or 1


class PoolSettings(_Section):
    max_size: PositiveInt


class PostgresSettings(_Section):
    host: NonEmpty
    port: Port
    database: NonEmpty
    user: NonEmpty
    password: SecretStr
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
    sslrootcert: str
    managed: Literal["auto"] | bool
    retention_days: PositiveInt
    #: page_activity's retention (its minutes are many; their hours stay retention_days).
    page_activity_retention: Duration
    pool: PoolSettings

    @property
    def runs_locally(self) -> bool:
        """Whether ./infra/wikipulse starts and stops this server itself."""
        if self.managed != "auto":
            return bool(self.managed)
        return _is_loopback(self.host)

    # The connection options are built in app/config/clients.py (one place for every client):
    # libpq_params(postgres) and sqlalchemy_url(postgres).


class WebSettings(_Section):
    host: NonEmpty
    port: Port


def _known_versions(versions: list[int]) -> list[int]:
    known = sorted(CONTRACTS)
    unknown = [version for version in versions if version not in CONTRACTS]
    if unknown:
        raise ValueError(f"no typed-event version {unknown[0]} (known: {known})")
    return versions


class AppSettings(_Section):
    id: str = Field(pattern=r"^[a-zA-Z0-9._-]+$")
    #: The versions of the typed event the worker writes, each to its own topic.
    typed_versions: Annotated[list[int], Field(min_length=1)]
    #: How many worker processes ./infra/wikipulse up runs on this machine (one group).
    workers: PositiveInt
    web: WebSettings

    @field_validator("typed_versions")
    @classmethod
    def _typed_versions_are_known_and_distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a version is listed twice")
        return _known_versions(value)


class DashboardSettings(_Section):
    host: NonEmpty
    port: Port
    refresh_interval: Duration
    stale_after: Duration


class MonitoringSettings(_Section):
    enabled: bool


class TrendingSettings(_Section):
    """trending_pages()'s knobs (alembic/README.md), for the dashboard and page alerts."""

    horizon: Duration
    baseline: Duration
    min_editors: PositiveInt
    with_bots: bool
    max_rows: PositiveInt
    #: (edits + 1) / (expected + 1) a page needs: busy all day is not trending.
    min_growth: Annotated[float, Field(ge=0)]
    #: A page whose score reaches this opens a page_trending alert,
    alert_score: Annotated[float, Field(gt=0)]
    #: when its edits are at most this likely by chance (spark/spikes.py: page_surprise).
    alert_p_value: Annotated[float, Field(gt=0, le=1)]
    #: The stream a page alert needs before its horizon (what its past is judged by).
    min_history: Duration


class SpikeSettings(_Section):
    """The per-wiki surge and drop rules (spark/spikes.py)."""

    baseline: Duration
    min_history: Duration
    surge_min_edits: PositiveInt
    surge_deviations: Annotated[float, Field(gt=0)]
    surge_min_ratio: Annotated[float, Field(ge=1)]
    drop_min_baseline: Annotated[float, Field(gt=0)]
    drop_max_ratio: Annotated[float, Field(ge=0, lt=1)]
    drop_minutes: PositiveInt


class WebhookSettings(_Section):
    urls: list[HttpUrl]
    format: Literal["json", "slack"]
    timeout: Duration
    backoff: BackoffSettings
    poll_interval: Duration


class AlertsSettings(_Section):
    enabled: bool
    trending: TrendingSettings
    spikes: SpikeSettings
    webhooks: WebhookSettings


class Settings(_Section):
    environment: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    wikipulse: WikipulseSection
    ingestion: IngestionSettings
    kafka: KafkaSettings
    spark: SparkSettings
    postgres: PostgresSettings
    app: AppSettings
    dashboard: DashboardSettings
    monitoring: MonitoringSettings
    alerts: AlertsSettings

    @property
    def home(self) -> Path:
        """``$WIKIPULSE_HOME``: the directory holding all local state."""
        if self.wikipulse.home:
            return Path(self.wikipulse.home).expanduser().resolve()
        if (PROJECT_ROOT / "pyproject.toml").exists():
            return PROJECT_ROOT / ".wikipulse"
        return Path.home() / ".local" / "state" / "wikipulse"

    @property
    def checkpoint_location(self) -> str:
        return self.spark.checkpoint.location or str(self.home / "spark" / "checkpoints")

    @property
    def is_development(self) -> bool:
        return self.environment == DEVELOPMENT


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
