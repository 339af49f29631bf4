"""The local Kafka brokers (KRaft, from Maven Central jars): one, or one per address of
kafka.bootstrap_servers, each a broker and a controller of one quorum."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from string import Template

from infra.component import ComponentState, Progress, SpawnedComponent
from infra.home import INFRA_DIR, Home
from infra.maven import fetch_jars, needs_maven, require_java
from infra.processes import (
    InfraError,
    ensure_port_free,
    port_open,
    read_pid,
    spawn,
    stop_recorded,
    tail,
    wait_started,
)
from infra.topics import cluster_health, ensure_topics, topic_specs

log = logging.getLogger(__name__)

KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
SPARK_POM = INFRA_DIR / "spark" / "pom.xml"
LOG4J_CONFIG = INFRA_DIR / "kafka" / "log4j2.properties"
SERVER_TEMPLATE = INFRA_DIR / "kafka" / "server.properties.template"


@dataclass(frozen=True)
class KafkaNode:
    """One local broker, also a KRaft controller: its configuration, data, logs and process.
    Node 1 keeps the names of the single-node layout."""

    home: Home
    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def suffix(self) -> str:
        return "" if self.node_id == 1 else f"-{self.node_id}"

    @property
    def name(self) -> str:
        """Its pid and log files' stem (kafka, kafka-2, kafka-3)."""
        return f"kafka{self.suffix}"

    @property
    def properties_file(self) -> Path:
        return self.home.kafka_dir / f"server{self.suffix}.properties"

    @property
    def data(self) -> Path:
        return self.home.kafka_dir / f"data{self.suffix}"

    @property
    def log_dir(self) -> Path:
        return self.home.logs / self.name

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def output(self) -> Path:
        return self.home.logfile(self.name)

    @property
    def pidfile(self) -> Path:
        return self.home.pidfile(self.name)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        return read_pid(self.pidfile, str(self.properties_file))

    def accepts_clients(self) -> bool:
        return port_open(self.host, self.port)

    def cluster_id(self) -> str | None:
        """The cluster id its storage was formatted with; None before it is."""
        meta = self.data / "meta.properties"
        if not meta.is_file():
            return None
        for line in meta.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None


@dataclass(frozen=True)
class LocalKafka(SpawnedComponent):
    """The brokers ``up`` runs when ``kafka.bootstrap_servers`` is on this machine: one per
    address, each a broker and a KRaft controller, together a quorum (one node: today's
    single-node broker; three: a quorum that survives one death). Else external: ``up`` only
    creates the topics."""

    name = "kafka"
    pipeline = False
    title = "the Kafka broker"
    not_ready = "the Kafka broker did not accept connections"

    @property
    def nodes(self) -> list[KafkaNode]:
        return [
            KafkaNode(self.home, node_id, host, port, controller_port)
            for node_id, host, port, controller_port in self.settings.kafka.local_nodes
        ]

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def properties_file(self) -> Path:
        return self.nodes[0].properties_file

    @property
    def marker(self) -> str:
        return str(self.properties_file)

    @property
    def server_log(self) -> Path:
        return self.nodes[0].server_log

    @property
    def logfile(self) -> Path:
        """The (first) broker's own log once it has one; its standard output before."""
        return self.server_log if self.server_log.exists() else self.output

    def healthy(self) -> bool:
        return all(node.pid() is not None and node.accepts_clients() for node in self.nodes)

    def announce(self, progress: Progress) -> None:
        if needs_maven(KAFKA_POM):
            progress("kafka: fetching the broker jars with Maven (first time only)")

    def up(self, progress: Progress) -> None:
        """Start the local brokers (unless Kafka is external), then create the missing
        topics."""
        if self.settings.kafka.runs_locally:
            nodes = self.nodes
            running = {node.name for node in nodes if node.pid() is not None}
            if len(running) < len(nodes):
                self.announce(progress)
            self.start()
            for node in nodes:
                state = "running" if node.name in running else "started"
                where = "" if len(nodes) == 1 else f", broker {node.node_id} at {node.address}"
                progress(f"kafka: {state} (pid {node.pid()}){where}")
        created = ensure_topics(self.settings)
        if created:
            progress("kafka: created topics " + ", ".join(created))

    def state(self) -> ComponentState:
        address = self.settings.kafka.bootstrap_servers
        managed = self.settings.kafka.runs_locally
        pid = self.pid() if managed else None
        notes: tuple[str, ...] = ()
        healthy, detail = False, "not running"
        if managed:
            down = [node for node in self.nodes if node.pid() is None]
            if len(self.nodes) > 1:
                notes = tuple(
                    f"broker {node.node_id}: "
                    + (f"pid {node.pid()}" if node.pid() is not None else "DOWN")
                    + f", {node.address}"
                    for node in self.nodes
                )
        else:
            down = []
        if not managed or len(down) < len(self.nodes):
            try:
                health = cluster_health(self.settings)
                wanted = {spec.name for spec in topic_specs(self.settings)}
                missing = sorted(wanted - set(health.topics))
                healthy = not missing and not down and health.sound
                detail = "topics ready" if not missing else "missing topics: " + ", ".join(missing)
                if len(self.nodes) > 1 or not managed:
                    detail += f"; {health.describe()}"
                if down:
                    detail += "; DOWN: " + ", ".join(f"broker {n.node_id}" for n in down)
            except Exception as error:  # any client failure means: not healthy
                detail = f"unreachable: {error}"
        return ComponentState(self.name, managed, True, healthy, pid, address, detail, notes)

    def fetch_jars(self) -> list[Path]:
        return fetch_jars(KAFKA_POM, self.home.kafka_jars, log_file=self.home.logfile("maven"))

    def _java(
        self, main_class: str, *args: str, heap: str | None = None, node: KafkaNode | None = None
    ) -> list[str]:
        command = ["java"]
        if heap:
            command.append(f"-Xmx{heap}")
        command += [
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={(node or self.nodes[0]).log_dir}",
            "-cp",
            f"{self.home.kafka_jars}/*",
            main_class,
            *args,
        ]
        return command

    def _render_properties(self) -> None:
        """Every node's ``server.properties``, from the one template."""
        kafka = self.settings.kafka
        nodes = self.nodes
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)
        for node in nodes:
            text = Template(SERVER_TEMPLATE.read_text()).substitute(
                node_id=node.node_id,
                voters=voters,
                host=node.host,
                broker_port=node.port,
                controller_port=node.controller_port,
                log_dirs=node.data,
                # Kafka's own topics (offsets, transactions): as many replicas as nodes, up to 3.
                internal_replicas=min(3, len(nodes)),
                min_insync_replicas=kafka.min_insync_replicas,
            )
            node.properties_file.parent.mkdir(parents=True, exist_ok=True)
            node.properties_file.write_text(text)

    def _format_storage(self) -> None:
        """Format each node not formatted yet, all with the one cluster id."""
        nodes = self.nodes
        known = {cid for node in nodes if (cid := node.cluster_id()) is not None}
        if len(known) > 1:
            raise InfraError(
                f"the Kafka nodes in {self.home.kafka_dir} belong to different clusters "
                f"({', '.join(sorted(known))}): `./infra/wikipulse down --purge` starts afresh"
            )
        cluster_id = known.pop() if known else new_cluster_id()
        for node in nodes:
            if node.cluster_id() is not None:
                continue
            result = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(node.properties_file),
                    node=node,
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise InfraError(
                    f"formatting Kafka's storage in {node.data} failed: "
                    f"{(result.stderr or result.stdout).strip()[-600:]}"
                )

    def start(self, *, timeout: float = 90.0) -> int:
        """Start the nodes that do not run; the first one's pid once every node accepts
        clients. All are spawned before any is waited for: a quorum elects its leader only
        once most of its voters run."""
        nodes = self.nodes
        stopped = [node for node in nodes if node.pid() is None]
        if stopped:
            require_java()
            self.fetch_jars()
            for node in stopped:
                ensure_port_free(
                    node.host,
                    node.port,
                    needed_by=f"the local Kafka broker {node.node_id}",
                    fix="set KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<another port>[,...]",
                )
                ensure_port_free(
                    node.host,
                    node.controller_port,
                    needed_by=f"the local Kafka controller {node.node_id}",
                    fix="set KAFKA_LOCAL_CONTROLLER_PORT=<another port>",
                )
            self._render_properties()
            self._format_storage()
            env = {**os.environ, "KAFKA_HEAP_OPTS": ""}
            heap = self.settings.kafka.local.heap
            spawned = {
                node: spawn(
                    self._java("kafka.Kafka", str(node.properties_file), heap=heap, node=node),
                    pidfile=node.pidfile,
                    logfile=node.output,
                    env=env,
                )
                for node in stopped
            }
            dead = wait_started(
                spawned, lambda: all(n.accepts_clients() for n in nodes), timeout=timeout
            )
            if dead is not None:
                raise InfraError(
                    f"the Kafka broker {dead.node_id} exited during start-up ({dead.output}):\n"
                    f"{tail(dead.output, 30)}\n(full log: {dead.server_log})"
                )
            late = [n.address for n in nodes if not n.accepts_clients()]
            if late:
                raise InfraError(f"{self.not_ready} within {timeout:.0f} s: {', '.join(late)}")
        pid = nodes[0].pid()
        assert pid is not None
        return pid

    def stop(self) -> bool:
        """Stop every node; False when none was running."""
        return bool(self.down())

    def down(self) -> list[str]:
        """Stop every node, all at once (one by one, the last ones wait for a quorum that is
        going away); the names of those that ran."""
        running = [(node, pid) for node in self.nodes if (pid := node.pid()) is not None]
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            for node, pid in running:
                pool.submit(stop_recorded, pid, node.pidfile, timeout=self.stop_timeout)
        return [node.name for node, _ in running]


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
