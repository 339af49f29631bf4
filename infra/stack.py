"""The whole local stack: which components run where, in which order, and how healthy they are."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from alembic import command
from app.config import Settings
from infra.dashboard import LocalDashboard
from infra.home import PROJECT_ROOT, Home
from infra.kafka import LocalKafka, ensure_topics, fetch_spark_jars, list_topics
from infra.postgres import LocalPostgres, psql_command
from infra.processes import InfraError, port_open, wait_for
from infra.spark_job import LocalSparkJob
from infra.worker import LocalWorker

COMPONENTS = ("postgres", "kafka", "worker", "spark", "dashboard")
#: How long `up` waits for a started worker to report healthy before it moves on.
WORKER_HEALTHY_WAIT = 30.0
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ComponentState:
    name: str
    managed: bool  # started and stopped by this command (else external)
    required: bool
    healthy: bool
    pid: int | None
    address: str
    detail: str


def alembic_config(settings: Settings) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["settings"] = settings
    config.attributes["skip_logging_config"] = True
    return config


def migrate(settings: Settings, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on the configured database."""
    command.upgrade(alembic_config(settings), revision)


def schema_revision(settings: Settings) -> tuple[str | None, str | None]:
    """(current revision of the database, head revision of the code)."""
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    engine = create_engine(
        settings.postgres.sqlalchemy_url(), pool_pre_ping=True, connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return current, head


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = Home(settings.home)
        self.postgres = LocalPostgres(settings, self.home)
        self.kafka = LocalKafka(settings, self.home)
        self.worker = LocalWorker(settings, self.home)
        self.spark = LocalSparkJob(settings, self.home)
        self.dashboard = LocalDashboard(settings, self.home)

    @property
    def kafka_is_local(self) -> bool:
        return self.settings.kafka.runs_locally

    def up(self, progress: Progress = _quiet, *, pipeline: bool = True) -> None:
        """Start what is not running, in dependency order; idempotent."""
        self.home.root.mkdir(parents=True, exist_ok=True)
        if self.settings.postgres.runs_locally:
            if not self.postgres.initialized():
                progress("postgres: initializing a new cluster")
            was_running = self.postgres.pid() is not None
            pid = self.postgres.start()
            progress(f"postgres: {'running' if was_running else 'started'} (pid {pid})")
        progress("postgres: alembic upgrade head")
        try:
            migrate(self.settings)
        except SQLAlchemyError as error:
            raise InfraError(f"migrating the database failed: {error}") from None
        if self.kafka_is_local:
            if not (self.home.kafka_jars / ".fetched-from").exists():
                progress("kafka: fetching the broker jars with Maven (first time only)")
            was_running = self.kafka.pid() is not None
            pid = self.kafka.start()
            progress(f"kafka: {'running' if was_running else 'started'} (pid {pid})")
        created = ensure_topics(self.settings)
        if created:
            progress("kafka: created topics " + ", ".join(created))
        if not (self.home.spark_jars / ".fetched-from").exists():
            progress("spark: fetching the Kafka connector jars with Maven (first time only)")
        fetch_spark_jars(self.home)
        if pipeline:
            was_running = self.worker.pid() is not None
            pid = self.worker.start()
            state = "running" if was_running else "started"
            source = (
                f"following {self.settings.ingestion.wikimedia.url}"
                if self.settings.ingestion.enabled
                else "normalizing only (ingestion.enabled is false)"
            )
            progress(f"worker: {state} (pid {pid}), {source}")
            if not wait_for(self.worker.healthy, timeout=WORKER_HEALTHY_WAIT):
                progress(
                    f"worker: not healthy after {WORKER_HEALTHY_WAIT:.0f} s (is the stream "
                    "reachable? see `./infra/wikipulse logs worker`)"
                )
            if self.spark.pid() is None:
                progress("spark: starting the job with spark-submit (about 20 s)")
                pid = self.spark.start()
                progress(f"spark: started (pid {pid})")
            else:
                progress(f"spark: running (pid {self.spark.pid()})")
            was_running = self.dashboard.pid() is not None
            pid = self.dashboard.start()
            state = "running" if was_running else "started"
            progress(f"dashboard: {state} (pid {pid}) at {self.dashboard.url}")

    def down(
        self,
        *,
        purge: bool = False,
        components: Sequence[str] = (),
        progress: Progress = _quiet,
    ) -> None:
        """Stop what this home runs (all of it, or ``components``), in reverse order; with
        ``purge`` delete the whole home."""
        wanted = set(components) or set(COMPONENTS)
        if "dashboard" in wanted and self.dashboard.stop():
            progress("dashboard: stopped")
        if "spark" in wanted and self.spark.stop():
            progress("spark: stopped")
        if "worker" in wanted:
            for name in self.worker.stop_all():
                progress(f"{name}: stopped")
        stopping: tuple[tuple[str, Any], ...] = (("kafka", self.kafka), ("postgres", self.postgres))
        for name, component in stopping:
            if name in wanted and component.stop():
                progress(f"{name}: stopped")
        if purge:
            self._purge(progress)

    def _purge(self, progress: Progress) -> None:
        for path in (self.home.root, self.postgres.socket_dir):
            if path.exists():
                shutil.rmtree(path)
                progress(f"deleted {path}")

    def status(self) -> list[ComponentState]:
        return [
            self._postgres_state(),
            self._kafka_state(),
            self._worker_state(),
            self._spark_state(),
            self._dashboard_state(),
        ]

    def _dashboard_state(self) -> ComponentState:
        pid = self.dashboard.pid()
        healthy = pid is not None and self.dashboard.healthy()
        detail = "serving" if healthy else ("not answering" if pid else "not running")
        return ComponentState("dashboard", True, True, healthy, pid, self.dashboard.url, detail)

    def _spark_state(self) -> ComponentState:
        pid = self.spark.pid()
        detail = self.spark.last_batch() if pid is not None else "not running"
        address = self.settings.spark.master
        return ComponentState("spark", True, True, pid is not None, pid, address, detail)

    def _worker_state(self) -> ComponentState:
        pid = self.worker.pid()
        report = self.worker.health() if pid is not None else None
        if pid is None:
            detail = "not running"
        elif report is None:
            detail = "running, web server not answering"
        else:
            outcomes = report.get("outcomes", {})
            detail = (
                ("healthy" if report.get("healthy") else "UNHEALTHY (no events recently)")
                + f", connected={report.get('connected')}, valid={outcomes.get('valid', 0):.0f}"
                + f" dead_letter={outcomes.get('dead_letter', 0):.0f}"
            )
        healthy = bool(report and report.get("healthy"))
        return ComponentState("worker", True, True, healthy, pid, self.worker.url, detail)

    def _postgres_state(self) -> ComponentState:
        pg = self.settings.postgres
        address = f"{pg.host}:{pg.port}"
        managed = pg.runs_locally
        pid = self.postgres.pid() if managed else None
        reachable = port_open(pg.host, pg.port)
        detail = "not running" if not reachable else ""
        healthy = False
        if reachable:
            try:
                current, head = schema_revision(self.settings)
                healthy = True
                detail = f"database {pg.database}, schema {current or 'empty'}"
                if current != head:
                    detail += f" (code is at {head}: run `up` to migrate)"
            except SQLAlchemyError as error:
                detail = (
                    f"unreachable: {str(error.orig if hasattr(error, 'orig') else error).strip()}"
                )
        if managed and pid is None:
            healthy = False
            detail = "not running" if not reachable else "port taken by another process"
        return ComponentState("postgres", managed, True, healthy, pid, address, detail)

    def _kafka_state(self) -> ComponentState:
        address = self.settings.kafka.bootstrap_servers
        managed = self.kafka_is_local
        pid = self.kafka.pid() if managed else None
        healthy, detail = False, "not running"
        if not managed or pid is not None:
            try:
                topics = list_topics(self.settings)
                wanted = {
                    t.name
                    for t in (
                        self.settings.kafka.topics.raw,
                        self.settings.kafka.topics.typed,
                        self.settings.kafka.topics.dead_letter,
                    )
                }
                missing = sorted(wanted - set(topics))
                healthy = True
                detail = "topics ready" if not missing else "missing topics: " + ", ".join(missing)
            except Exception as error:  # any client failure means: not healthy
                detail = f"unreachable: {error}"
        return ComponentState("kafka", managed, True, healthy, pid, address, detail)

    def log_path(self, component: str) -> Path:
        if component == "postgres":
            return self.postgres.logfile
        if component == "kafka":
            server_log = self.home.logs / "kafka" / "server.log"
            return server_log if server_log.exists() else self.home.logfile("kafka")
        if component == "worker":
            return self.home.logfile(self.worker.name)
        return self.home.logfile(component)

    def psql_command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        if self.settings.postgres.runs_locally:
            return self.postgres.psql_command(args)
        return psql_command(self.settings, args)
