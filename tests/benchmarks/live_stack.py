"""The whole pipeline as ``./infra/wikipulse up --replay`` runs it, for the benchmarks that watch
it live (``bench_freshness.py``, ``bench_footprint.py``).

With ``cluster``: the cluster layout (``up --cluster``), on ports of its own.
Without ``reuse_services``: a stack of its own (PostgreSQL, Kafka and every process) in a
temporary ``WIKIPULSE_HOME`` on free ports, purged after. With it: Kafka and PostgreSQL are the
environment's (``app.config.load_settings()``: already running, never started or stopped here);
the pipeline's processes (replay server, worker, Spark job, dashboard) run in a temporary home of
their own on a fresh database, fresh topics and a fresh app id, all deleted after.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from types import TracebackType
from typing import Any

import psycopg2
from aiokafka.admin import AIOKafkaAdminClient
from psycopg2 import sql

from app.config import Settings, load_settings
from app.config.clients import aiokafka_options, libpq_params
from infra.processes import free_port
from infra.replay_server import ReplayMode, load_mode
from infra.stack import Stack
from tests.conftest import make_home, stack_environment
from tests.harness import cluster_environment


def say(text: str) -> None:
    print(text, flush=True)


class LiveStack:
    """``with LiveStack(mode, reuse_services=…, KEY=value…) as live:`` the stack runs, replaying
    ``mode``, configured by the environment variables given (e.g.
    ``SPARK_TRIGGER_PROCESSING_TIME="1 second"``)."""

    def __init__(
        self, mode: ReplayMode, *, reuse_services: bool, cluster: bool = False, **config: str
    ) -> None:
        if cluster and reuse_services:
            raise ValueError("the cluster layout runs services of its own")
        self.mode = mode
        self.reuse_services = reuse_services
        self.home = make_home("wikipulse-bench-")
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        if reuse_services:
            # The services' own stack: their pids, and PostgreSQL's administration socket.
            self.services = Stack(load_settings())
            self.environ = {**os.environ, **self._pipeline_environment(), **config}
        else:
            layout = cluster_environment() if cluster else {}
            self.environ = {**os.environ, **stack_environment(self.home), **layout, **config}
        self.settings = load_settings(environ=self.environ)
        self.stack = Stack(self.settings)
        if not reuse_services:
            self.services = self.stack

    def _pipeline_environment(self) -> dict[str, str]:
        """The pipeline on the environment's services, under names of its own."""
        return {
            "WIKIPULSE_HOME": str(self.home),
            "KAFKA_MANAGED": "false",
            "POSTGRES_MANAGED": "false",
            "POSTGRES_DATABASE": self.prefix.replace("-", "_"),
            "KAFKA_TOPICS_RAW_NAME": f"{self.prefix}.raw",
            "KAFKA_TOPICS_TYPED_NAME": f"{self.prefix}.typed",
            "KAFKA_TOPICS_DEAD_LETTER_NAME": f"{self.prefix}.dead-letter",
            "APP_ID": f"{self.prefix}-worker",  # also the prefix of the worker's Faust topics
            "APP_WEB_PORT": str(free_port()),
            "DASHBOARD_PORT": str(free_port()),
        }

    def __enter__(self) -> LiveStack:
        # A SIGTERM (a test's timeout) must still stop what was started: the processes run in
        # sessions of their own and would outlive this one.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        # The components that up spawns read their configuration from the environment.
        os.environ.update(self.environ)
        where = "the environment's Kafka and PostgreSQL" if self.reuse_services else "its own"
        say(f"starting the stack in {self.home} on {where}, serving {self.mode.describe()} …")
        if self.reuse_services:
            self._create_database()
            self._copy_connector_jars()
        self.stack.up(say, replay=self.mode)

    def _create_database(self) -> None:
        with self.services.postgres.admin() as cursor:
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.settings.postgres.database),
                    sql.Identifier(self.settings.postgres.user),
                )
            )

    def _copy_connector_jars(self) -> None:
        """The services' home has fetched them already: no second Maven run."""
        fetched = self.services.home.spark_jars
        if fetched.is_dir():
            shutil.copytree(fetched, self.stack.home.spark_jars)

    @property
    def replay_url(self) -> str:
        mode = load_mode(self.stack.home)
        assert mode is not None, "up --replay records the mode"
        return mode.url

    def restart_spark(self, **config: str) -> None:
        """Stop the Spark job, then start it again (from its checkpoint) with ``config``."""
        self.stack.spark.stop()
        self.environ.update(config)
        os.environ.update(config)
        self.settings = load_settings(environ=self.environ)
        self.stack = Stack(self.settings)
        self.stack.spark.up(say)

    def pids(self) -> dict[str, int | None]:
        """Each component's pid (Kafka's and PostgreSQL's from whichever stack runs them)."""
        found = {component.name: component.pid() for component in self.stack.components}
        found["kafka"] = self.services.kafka.pid()
        found["postgres"] = self.services.postgres.pid()
        return found

    def down_components(self) -> list[str]:
        """The components that should run and do not (none, normally)."""
        return [state.name for state in self.stack.status() if not state.healthy]

    def events_aggregated(self) -> int:
        """The events the Spark job has counted in PostgreSQL so far."""
        connection = connect(self.settings)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT coalesce(sum(events), 0) FROM wiki_activity")
                return int(cursor.fetchone()[0])
        finally:
            connection.close()

    def close(self) -> None:
        say("stopping the stack …")
        if self.reuse_services:
            self.stack.down()
            self._drop_database()
            asyncio.run(self._delete_topics())
        else:
            self.stack.down(purge=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def _drop_database(self) -> None:
        with self.services.postgres.admin() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.settings.postgres.database)
                )
            )

    async def _delete_topics(self) -> None:
        """Ours, and the worker's Faust topics (named after its app id)."""
        admin = AIOKafkaAdminClient(**aiokafka_options(self.settings.kafka))
        await admin.start()
        try:
            ours = [name for name in await admin.list_topics() if name.startswith(self.prefix)]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()


def connect(settings: Settings) -> Any:
    """A psycopg2 connection to the configured database, autocommit: each query sees what was
    committed when it started."""
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    connection.autocommit = True
    return connection
