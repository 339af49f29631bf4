"""The whole local stack: which components run where, in which order, and how healthy they are."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from alembic import command
from app.config import Settings
from app.config.clients import libpq_params, sqlalchemy_url
from infra.dashboard import LocalDashboard
from infra.home import PROJECT_ROOT, Home
from infra.kafka import LocalKafka, ensure_topics, fetch_spark_jars, list_topics
from infra.lag import consumer_lag, status_lines
from infra.postgres import LocalPostgres, psql_command
from infra.processes import InfraError, port_open, wait_for
from infra.replay_server import LocalReplay, ReplayMode, clear_mode, load_mode, save_mode
from infra.spark_job import LocalSparkJob
from infra.worker import LocalWorker

COMPONENTS = ("postgres", "kafka", "replay", "worker", "spark", "dashboard")
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
    #: More to say, each shown on a line of its own under the component's.
    notes: tuple[str, ...] = ()


def alembic_config(settings: Settings) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["settings"] = settings
    config.attributes["skip_logging_config"] = True
    return config


def migrate(settings: Settings, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on the configured database."""
    command.upgrade(alembic_config(settings), revision)


def format_age(seconds: float) -> str:
    """A duration as a person says it: 14 s, 5 min, 3 h, 161 days."""
    seconds = max(0.0, seconds)
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 100 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def stream_error(report: dict[str, Any], now: float | None = None) -> str | None:
    """One line from a worker's /health: its last connection error, when, and when it tries
    again; None when it is connected (or a standby: the leader follows the stream) or has had
    no error."""
    error = report.get("last_error")
    if report.get("connected") or report.get("leader") is False or not isinstance(error, dict):
        return None
    now = time.time() if now is None else now
    failures = int(error.get("failures") or 0)
    in_a_row = f", {failures} failures in a row" if failures > 1 else ""
    due = float(error["next_attempt"]) - now
    next_attempt = f"in {format_age(due)}" if due >= 0.5 else "now"
    return (
        f"last error {format_age(now - float(error['at']))} ago ({error['reason']}{in_a_row}): "
        f"{error['message']}; next attempt {next_attempt}"
    )


def schema_revision(settings: Settings) -> tuple[str | None, str | None]:
    """(current revision of the database, head revision of the code)."""
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    engine = create_engine(
        sqlalchemy_url(settings.postgres), pool_pre_ping=True, connect_args={"connect_timeout": 3}
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
        self.replay = LocalReplay(self.home)

    @property
    def replay_mode(self) -> ReplayMode | None:
        """The replay ``up --replay`` recorded in this home, or None: the live stream."""
        return load_mode(self.home)

    @property
    def kafka_is_local(self) -> bool:
        return self.settings.kafka.runs_locally

    def up(
        self,
        progress: Progress = _quiet,
        *,
        pipeline: bool = True,
        replay: ReplayMode | None = None,
        live: bool = False,
    ) -> None:
        """Start what is not running, in dependency order; idempotent.

        ``replay``: enter (or change) replay mode: the worker follows a local replay server
        serving that file. ``live``: leave replay mode. Neither: keep the recorded mode.
        """
        if replay is not None and live:
            raise ValueError("replay and live exclude each other")
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
            mode = self._choose_mode(replay, live, progress)
            if mode is not None:
                mode = self._start_replay(mode, progress)
            started = self._start_worker(mode, progress)
            if started and not wait_for(self.worker.healthy, timeout=WORKER_HEALTHY_WAIT):
                progress(
                    f"worker: not healthy after {WORKER_HEALTHY_WAIT:.0f} s: is the stream "
                    "reachable, does it send events? After a crash the worker first waits for "
                    "Kafka to drop its old self from the consumer group (about a minute). See "
                    "`./infra/wikipulse logs worker`"
                )
                report = self.worker.health()
                why = stream_error(report) if report is not None else None
                if why is not None:
                    progress(f"worker: {why}")
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

    def _choose_mode(
        self, replay: ReplayMode | None, live: bool, progress: Progress
    ) -> ReplayMode | None:
        """Record the requested mode (or keep the recorded one); stop a replay server that
        serves something else than what is asked for."""
        recorded = self.replay_mode
        if live:
            if recorded is not None:
                if self.replay.stop():
                    progress("replay: stopped")
                clear_mode(self.home)
                progress("replay mode ended: the worker follows the live stream")
            return None
        if replay is None:
            if recorded is not None:
                progress(
                    "replay mode, kept from an earlier `up --replay` "
                    "(`./infra/wikipulse up --live` follows the live stream instead)"
                )
            return recorded
        if recorded is not None:
            if recorded.same_stream(replay):
                replay = replace(recorded, events=replay.events)  # a synthetic stream goes on
            else:
                replay = replace(replay, port=recorded.port)  # the worker's URL stays the same
                if self.replay.stop():
                    progress(f"replay: stopped (it served {recorded.describe()})")
        save_mode(self.home, replay)
        return replay

    def _start_replay(self, mode: ReplayMode, progress: Progress) -> ReplayMode:
        """The replay server running ``mode`` (on a new free port if its own is taken)."""
        pid = self.replay.pid()
        if pid is not None:
            progress(f"replay: running (pid {pid}), {mode.describe()}, at {mode.url}")
            return mode
        chosen = self.replay.choose_port(mode)
        if chosen.port != mode.port:
            if mode.port:
                progress(
                    f"replay: port {mode.port} is taken by another process, moving to {chosen.port}"
                )
            save_mode(self.home, chosen)
        pid = self.replay.start(chosen)
        progress(f"replay: started (pid {pid}), {chosen.describe()}, at {chosen.url}")
        return chosen

    def _start_worker(self, mode: ReplayMode | None, progress: Progress) -> bool:
        """Start the worker on the mode's stream; restart it when it follows another one
        (after a switch between the live stream and a replay, or to a new replay port).
        Whether it was (re)started."""
        url = mode.url if mode is not None else self.settings.ingestion.wikimedia.url
        if self.worker.pid() is not None:
            following = self.worker.source()
            was_replay = following is not None and bool(following.get("replay"))
            if (mode is not None or was_replay) and (following or {}).get("url") != url:
                progress(f"worker: restarting it to follow {url}")
                self.worker.stop()
        was_running = self.worker.pid() is not None
        pid = self.worker.start(replay_url=mode.url if mode is not None else None)
        state = "running" if was_running else "started"
        source = (
            f"following {url}"
            if self.settings.ingestion.enabled
            else "normalizing only (ingestion.enabled is false)"
        )
        progress(f"worker: {state} (pid {pid}), {source}")
        return not was_running

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
        if "replay" in wanted and self.replay.stop():
            progress("replay: stopped")
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
        replay = self.replay_mode
        return [
            self._postgres_state(),
            self._kafka_state(),
            *([self._replay_state(replay)] if replay is not None else []),
            self._worker_state(),
            self._spark_state(),
            self._dashboard_state(),
        ]

    def _replay_state(self, mode: ReplayMode) -> ComponentState:
        pid = self.replay.pid()
        healthy = pid is not None and self.replay.healthy(mode.port)
        if pid is None:
            detail = f"not running (to serve {mode.describe()})"
        elif not healthy:
            detail = f"not answering on port {mode.port}"
        else:
            detail = f"serving {mode.describe()}"
        return ComponentState("replay", True, True, healthy, pid, mode.address, detail)

    def newest_aggregated_event(self) -> tuple[datetime, float] | None:
        """(event time, age in seconds) of the newest event the Spark job has written to
        PostgreSQL (``pipeline_batches.max_event_time``); None before the first.
        Raises psycopg2.Error when the database cannot answer."""
        connection = psycopg2.connect(**libpq_params(self.settings.postgres), connect_timeout=3)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(
                    "SELECT newest, extract(epoch FROM now() - newest)::float8"
                    " FROM (SELECT max(max_event_time) AS newest FROM pipeline_batches) AS b"
                    " WHERE newest IS NOT NULL"
                )
                row = cursor.fetchone()
        finally:
            connection.close()
        return None if row is None else (row[0], float(row[1]))

    def freshness(self) -> str:
        """One line: how old the newest event in PostgreSQL is, and the worker's lag."""
        try:
            newest = self.newest_aggregated_event()
        except psycopg2.errors.UndefinedTable:
            stored = "no event in PostgreSQL yet (its schema is missing: run `up`)"
        except psycopg2.Error:
            stored = "PostgreSQL does not answer"
        else:
            if newest is None:
                stored = "no event in PostgreSQL yet"
            else:
                when, age = newest
                stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                stored = f"the newest event in PostgreSQL is {format_age(age)} old ({stamp})"
        report = self.worker.health() if self.worker.pid() is not None else None
        if self.worker.pid() is None:
            lag = "the worker is not running"
        elif report is None:
            lag = "the worker does not answer"
        elif report.get("last_event_time") is None:
            lag = "the worker has had no event yet"
        else:
            now = time.time()
            lag = f"the worker's lag is {format_age(now - float(report['last_event_time']))}"
            if report.get("last_received") is not None:
                received = format_age(now - float(report["last_received"]))
                lag += f" (last event received {received} ago)"
        return f"{stored}; {lag}"

    def lag(self) -> list[str]:
        """One line per reader of Kafka (the normalizer's group, the Spark job's checkpoint):
        how far behind the end of its topic it is (:mod:`infra.lag`)."""
        if self.kafka_is_local and self.kafka.pid() is None:
            return ["lag: unknown (Kafka is not running)"]
        return status_lines(consumer_lag(self.settings))

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
            if report.get("healthy"):
                state = "healthy"
            elif report.get("connected") is False and report.get("leader") is not False:
                state = "UNHEALTHY (not connected to the stream)"
            else:
                state = "UNHEALTHY (no events recently)"
            detail = (
                state
                + f", connected={report.get('connected')}, valid={outcomes.get('valid', 0):.0f}"
                + f" dead_letter={outcomes.get('dead_letter', 0):.0f}"
            )
        error = stream_error(report) if report is not None else None
        healthy = bool(report and report.get("healthy"))
        return ComponentState(
            "worker", True, True, healthy, pid, self.worker.url, detail, (error,) if error else ()
        )

    def offline_hint(self) -> str | None:
        """When the worker follows the live stream and is not connected to it: a line saying
        why and how to run without it (a replay); else None."""
        if self.replay_mode is not None or not self.settings.ingestion.enabled:
            return None
        report = self.worker.health() if self.worker.pid() is not None else None
        if report is None or report.get("connected") or report.get("leader") is False:
            return None
        error = report.get("last_error")
        if not isinstance(error, dict):
            return None  # not connected yet, but nothing failed either
        return (
            f"hint: the worker cannot reach {self.settings.ingestion.wikimedia.url} "
            f"({error['message']}). On a machine without the live stream, replay one instead: "
            "./infra/wikipulse up --replay"
        )

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
        if component == "replay":
            return self.replay.logfile
        return self.home.logfile(component)

    def psql_command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        if self.settings.postgres.runs_locally:
            return self.postgres.psql_command(args)
        return psql_command(self.settings, args)
