"""The whole local stack: its components in the order ``up`` starts them, the replay mode, and
what ``status`` says about the pipeline as a whole (freshness, lag)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import TypeVar

import psycopg2
import psycopg2.errors

from app.alerts.store import delivery_summary
from app.config import Settings
from app.config.clients import libpq_params
from infra.component import Component, ComponentState, Progress, format_age, quiet
from infra.dashboard import LocalDashboard
from infra.home import Home
from infra.kafka import LocalKafka
from infra.lag import consumer_lag, status_lines
from infra.postgres import LocalPostgres, psql_command
from infra.replay_server import LocalReplay, ReplayMode, clear_mode, load_mode, save_mode
from infra.spark_cluster import LocalSparkCluster
from infra.spark_job import LocalSparkJob
from infra.worker import LocalWorker

#: The components in the order ``up`` starts them (each needs those before it); ``down`` stops
#: them in reverse.
ORDER: tuple[type[Component], ...] = (
    LocalPostgres,
    LocalKafka,
    LocalReplay,
    LocalWorker,
    LocalSparkCluster,
    LocalSparkJob,
    LocalDashboard,
)
COMPONENTS = tuple(kind.name for kind in ORDER)

C = TypeVar("C", bound=Component)


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = Home(settings.home)
        self.components = tuple(kind(settings, self.home) for kind in ORDER)
        self.postgres = self._one(LocalPostgres)
        self.kafka = self._one(LocalKafka)
        self.replay = self._one(LocalReplay)
        self.worker = self._one(LocalWorker)
        self.spark_cluster = self._one(LocalSparkCluster)
        self.spark = self._one(LocalSparkJob)
        self.dashboard = self._one(LocalDashboard)

    def _one(self, kind: type[C]) -> C:
        return next(c for c in self.components if isinstance(c, kind))

    @property
    def replay_mode(self) -> ReplayMode | None:
        """The replay ``up --replay`` recorded in this home, or None: the live stream."""
        return load_mode(self.home)

    def up(
        self,
        progress: Progress = quiet,
        *,
        pipeline: bool = True,
        replay: ReplayMode | None = None,
        live: bool = False,
    ) -> None:
        """Start what is not running, in order; idempotent. Without ``pipeline``: the services
        only (PostgreSQL migrated, Kafka with its topics, the Spark connector jars).

        ``replay``: enter (or change) replay mode: the worker follows a local replay server
        serving that file. ``live``: leave replay mode. Neither: keep the recorded mode.
        """
        if replay is not None and live:
            raise ValueError("replay and live exclude each other")
        self.home.root.mkdir(parents=True, exist_ok=True)
        services = [c for c in self.components if not c.pipeline]
        processes = [c for c in self.components if c.pipeline]
        for component in services:
            component.up(progress)
        for component in processes:
            component.prepare(progress)
        if pipeline:
            self._choose_mode(replay, live, progress)
            for component in processes:
                component.up(progress)

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

    def down(
        self,
        *,
        purge: bool = False,
        components: Sequence[str] = (),
        progress: Progress = quiet,
    ) -> None:
        """Stop what this home runs (all of it, or ``components``), in reverse order; with
        ``purge`` delete the whole home."""
        wanted = set(components) or set(COMPONENTS)
        for component in reversed(self.components):
            if component.name in wanted:
                for name in component.down():
                    progress(f"{name}: stopped")
        if purge:
            # The PostgreSQL socket directory may live outside the home (a short path).
            for path in (self.home.root, self.postgres.socket_dir):
                if path.exists():
                    shutil.rmtree(path)
                    progress(f"deleted {path}")

    def status(self) -> list[ComponentState]:
        return [state for c in self.components if (state := c.state()) is not None]

    def freshness(self) -> str:
        """One line: how old the newest event in PostgreSQL is, and the worker's lag."""
        try:
            newest = self.spark.newest_event()
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
        if self.settings.kafka.runs_locally and self.kafka.pid() is None:
            return ["lag: unknown (Kafka is not running)"]
        return status_lines(consumer_lag(self.settings))

    def alerts(self) -> list[str]:
        """The open alerts by kind and the webhooks' deliveries (:mod:`app.alerts.store`)."""
        try:
            connection = psycopg2.connect(**libpq_params(self.settings.postgres), connect_timeout=3)
        except psycopg2.Error:
            return ["alerts: unknown (PostgreSQL does not answer)"]
        try:
            with connection, connection.cursor() as cursor:
                return delivery_summary(cursor).lines()
        except psycopg2.errors.UndefinedTable:
            return ["alerts: none yet (the schema is missing: run `up`)"]
        except psycopg2.Error:
            return ["alerts: unknown (PostgreSQL does not answer)"]
        finally:
            connection.close()

    def offline_hint(self) -> str | None:
        """When the worker cannot reach the live stream: a line saying why and how to run
        without it; else None."""
        return self.worker.offline_hint()

    def log_names(self) -> list[str]:
        """What ``logs`` can show: each component, each local Kafka node after the first
        (kafka-2 …), the Spark cluster's daemons (spark-master, spark-worker-1 …), and Maven's
        fetches."""
        names = []
        for component in self.components:
            if component is self.spark_cluster:
                names += [daemon.name for daemon in self.spark_cluster.daemons]
                continue
            names.append(component.name)
            if component is self.kafka:
                names += [node.name for node in self.kafka.nodes[1:]]
        return [*names, "maven"]

    def log_path(self, name: str) -> Path:
        """What ``logs NAME`` shows: a component's log, or another of the home's (``maven``)."""
        for component in self.components:
            if component.name == name:
                return component.logfile
        for node in self.kafka.nodes:
            if node.name == name:
                return node.server_log if node.server_log.exists() else node.output
        return self.home.logfile(name)  # the Spark cluster's daemons' too

    def psql_command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        if self.settings.postgres.runs_locally:
            return self.postgres.psql_command(args)
        return psql_command(self.settings, args)
