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
from infra.home import INFRA_DIR, Home
from infra.maven import fetch_jars, require_java
from infra.processes import (
    InfraError,
    ensure_port_free,
    pid_alive,
    port_open,
    read_pid,
    spawn,
    stop_recorded,
    tail,
    wait_for,
)

log = logging.getLogger(__name__)

KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
SPARK_POM = INFRA_DIR / "spark" / "pom.xml"
LOG4J_CONFIG = INFRA_DIR / "kafka" / "log4j2.properties"
SERVER_TEMPLATE = INFRA_DIR / "kafka" / "server.properties.template"
COMPONENT = "kafka"


@dataclass(frozen=True)
class LocalKafka:
    settings: Settings
    home: Home

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

    def pid(self) -> int | None:
        return read_pid(self.home.pidfile(COMPONENT), str(self.properties_file))

    def healthy(self) -> bool:
        return self.pid() is not None and port_open(self.host, self.port)

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
        logfile = self.home.logfile(COMPONENT)
        pid = spawn(
            self._java(
                "kafka.Kafka", str(self.properties_file), heap=self.settings.kafka.local.heap
            ),
            pidfile=self.home.pidfile(COMPONENT),
            logfile=logfile,
            env={**os.environ, "KAFKA_HEAP_OPTS": ""},
        )
        # The spawned pid itself (not the marker check, which reads a command line that can
        # be empty for a moment while the process starts).
        ready = wait_for(
            lambda: port_open(self.host, self.port) or not pid_alive(pid), timeout=timeout
        )
        if not pid_alive(pid):
            raise InfraError(
                f"the Kafka broker exited during start-up; its last output ({logfile}):\n"
                + tail(logfile)
                + "\n(full log: "
                + str(self.home.logs / "kafka" / "server.log")
                + ")"
            )
        if not ready:
            raise InfraError(f"the Kafka broker did not accept connections within {timeout:.0f} s")
        return pid

    def stop(self) -> bool:
        return stop_recorded(self.pid(), self.home.pidfile(COMPONENT), timeout=30)


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
            (topics.typed, retention),
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
