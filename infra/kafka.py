"""The local single-node Kafka broker (KRaft) from Maven Central jars, and topic creation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.config import Settings
from app.config.clients import aiokafka_options
from app.config.names import typed_topics
from infra.component import ComponentState, Progress, SpawnedComponent
from infra.home import INFRA_DIR, Home
from infra.maven import fetch_jars, needs_maven, require_java
from infra.processes import InfraError, ensure_port_free, port_open

log = logging.getLogger(__name__)

KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
SPARK_POM = INFRA_DIR / "spark" / "pom.xml"
LOG4J_CONFIG = INFRA_DIR / "kafka" / "log4j2.properties"
SERVER_TEMPLATE = INFRA_DIR / "kafka" / "server.properties.template"


@dataclass(frozen=True)
class LocalKafka(SpawnedComponent):
    """The broker ``up`` runs when ``kafka.bootstrap_servers`` is on this machine; else external:
    ``up`` only creates the topics."""

    name = "kafka"
    pipeline = False
    title = "the Kafka broker"
    not_ready = "the Kafka broker did not accept connections"

    @property
    def host(self) -> str:
        return self.settings.kafka.servers[0][0]

    @property
    def port(self) -> int:
        return self.settings.kafka.servers[0][1]

    @property
    def controller_port(self) -> int:
        return self.settings.kafka.local.controller_port

    @property
    def properties_file(self) -> Path:
        return self.home.kafka_dir / "server.properties"

    @property
    def marker(self) -> str:
        return str(self.properties_file)

    @property
    def server_log(self) -> Path:
        return self.home.logs / "kafka" / "server.log"

    @property
    def logfile(self) -> Path:
        """The broker's own log once it has one; its standard output before."""
        return self.server_log if self.server_log.exists() else self.output

    def healthy(self) -> bool:
        return self.pid() is not None and port_open(self.host, self.port)

    def announce(self, progress: Progress) -> None:
        if needs_maven(KAFKA_POM):
            progress("kafka: fetching the broker jars with Maven (first time only)")

    def up(self, progress: Progress) -> None:
        """Start the local broker (unless Kafka is external), then create the missing topics."""
        if self.settings.kafka.runs_locally:
            super().up(progress)
        created = ensure_topics(self.settings)
        if created:
            progress("kafka: created topics " + ", ".join(created))

    def state(self) -> ComponentState:
        address = self.settings.kafka.bootstrap_servers
        managed = self.settings.kafka.runs_locally
        pid = self.pid() if managed else None
        healthy, detail = False, "not running"
        if not managed or pid is not None:
            try:
                topics = list_topics(self.settings)
                wanted = {spec.name for spec in topic_specs(self.settings)}
                missing = sorted(wanted - set(topics))
                healthy = True
                detail = "topics ready" if not missing else "missing topics: " + ", ".join(missing)
            except Exception as error:  # any client failure means: not healthy
                detail = f"unreachable: {error}"
        return ComponentState(self.name, managed, True, healthy, pid, address, detail)

    def fetch_jars(self) -> list[Path]:
        return fetch_jars(KAFKA_POM, self.home.kafka_jars, log_file=self.home.logfile("maven"))

    def _java(self, main_class: str, *args: str, heap: str | None = None) -> list[str]:
        command = ["java"]
        if heap:
            command.append(f"-Xmx{heap}")
        command += [
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.home.logs / 'kafka'}",
            "-cp",
            f"{self.home.kafka_jars}/*",
            main_class,
            *args,
        ]
        return command

    def _render_properties(self) -> None:
        text = Template(SERVER_TEMPLATE.read_text()).substitute(
            host=self.host,
            broker_port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.home.kafka_data,
        )
        self.properties_file.parent.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(text)

    def _format_storage(self) -> None:
        if (self.home.kafka_data / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties_file),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise InfraError(
                f"formatting Kafka's storage in {self.home.kafka_data} failed: "
                f"{(result.stderr or result.stdout).strip()[-600:]}"
            )

    def start(self, *, timeout: float = 90.0) -> int:
        """Start the broker unless it runs already; return its pid once it accepts clients."""
        pid = self.pid()
        if pid is not None:
            return pid
        require_java()
        self.fetch_jars()
        ensure_port_free(
            self.host,
            self.port,
            needed_by="the local Kafka broker",
            fix="set KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<another port>",
        )
        ensure_port_free(
            self.host,
            self.controller_port,
            needed_by="the local Kafka controller",
            fix="set KAFKA_LOCAL_CONTROLLER_PORT=<another port>",
        )
        self._render_properties()
        self._format_storage()
        command = self._java(
            "kafka.Kafka", str(self.properties_file), heap=self.settings.kafka.local.heap
        )
        return self.spawn_and_wait(
            command,
            ready=lambda: port_open(self.host, self.port),
            timeout=timeout,
            env={**os.environ, "KAFKA_HEAP_OPTS": ""},
        )

    def exit_hint(self) -> str:
        return f"\n(full log: {self.server_log})"


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding, as Kafka's
    ``Uuid.randomUuid()`` makes it (which also redraws ids starting with "-")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def fetch_spark_jars(home: Home) -> list[Path]:
    """The Spark Kafka connector jars (for ``spark-submit --jars`` / ``spark.jars``)."""
    return fetch_jars(SPARK_POM, home.spark_jars, log_file=home.logfile("maven"))


def topic_specs(settings: Settings) -> list[NewTopic]:
    topics = settings.kafka.topics
    retention = {"retention.ms": str(settings.kafka.retention.ms)}
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


async def _list_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka), request_timeout_ms=5000)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


def list_topics(settings: Settings) -> list[str]:
    return asyncio.run(_list_topics(settings))
