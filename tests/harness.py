"""Helpers for tests that run real processes: the worker, a replay server, topic readers, the
``./infra/wikipulse`` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg2 import sql

from app.config import ENV_ALIASES, ENV_VARS, Settings, load_settings
from app.health import fetch_health
from infra.migrations import migrate
from infra.processes import free_port, pid_alive, port_open
from infra.replay.server import ReplayOptions, ReplayServer
from infra.stack import Stack
from infra.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
WIKIPULSE = str(ROOT / "infra" / "wikipulse")


def clean_environ() -> dict[str, str]:
    """os.environ without any wikipulse configuration variable of the developer's."""
    ours = set(ENV_VARS) | set(ENV_ALIASES) | {"WIKIPULSE_CONFIG_DIR", "WIKIPULSE_ENV_FILE"}
    return {k: v for k, v in os.environ.items() if k not in ours}


def cli_environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment of ``./infra/wikipulse`` run on a stack of its own in ``home`` (free
    ports, no developer configuration, the suite's Spark driver memory), plus ``extra``."""
    from tests.conftest import suite_environment

    return {**clean_environ(), **suite_environment(home), **extra}


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``./infra/wikipulse ARGS`` as a user runs it (from another directory)."""
    return subprocess.run(
        [WIKIPULSE, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd="/"
    )


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the local controllers listen on the ports
    after ``kafka.local.controller_port``, worker N on ``app.web.port`` + N - 1)."""
    for _ in range(50):
        first = free_port()
        if all(not port_open("127.0.0.1", first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def cluster_environment(workers: int = 2) -> dict[str, str]:
    """The cluster layout (``up --cluster``) on free ports: three brokers and their controllers,
    the Spark master and its UI, and room for ``workers`` workers' web servers."""
    return {
        "WIKIPULSE_LAYOUT": "cluster",
        "KAFKA_BOOTSTRAP_SERVERS": ",".join(f"127.0.0.1:{free_port()}" for _ in range(3)),
        "KAFKA_LOCAL_CONTROLLER_PORT": str(consecutive_free_ports(3)),
        "APP_WEB_PORT": str(consecutive_free_ports(workers)),
        "SPARK_MASTER": f"spark://127.0.0.1:{free_port()}",
        "SPARK_LOCAL_MASTER_UI_PORT": str(free_port()),
    }


def cli_pids(home: Path, app_id: str = "wikipulse-worker") -> dict[str, int]:
    """The pid of each component ``up`` started in ``home``, from its pid file (the worker's
    is named by its app id)."""
    found = {}
    for component, name in (
        ("kafka", "kafka"),
        ("replay", "replay"),
        ("worker", f"worker-{app_id}"),
        ("spark", "spark"),
        ("dashboard", "dashboard"),
    ):
        pidfile = home / "run" / f"{name}.pid"
        if pidfile.exists():
            found[component] = int(pidfile.read_text())
    postmaster = home / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        found["postgres"] = int(postmaster.read_text().split()[0])
    return found


def status_line(output: str, component: str) -> str:
    """The line of ``status`` (or ``up``) output about ``component``."""
    return next(line for line in output.splitlines() if f" {component} " in line)


@dataclass(frozen=True)
class ReplayStack:
    """A stack that ``./infra/wikipulse up --replay`` started in a home of its own."""

    env: dict[str, str]
    home: Path
    settings: Settings
    first_up: str  # what the first `up --replay` printed

    @property
    def replay_url(self) -> str:
        mode = json.loads((self.home / "replay.json").read_text())
        return f"http://127.0.0.1:{mode['port']}/v2/stream/recentchange"

    def run(self, *args: str) -> tuple[int, str, str]:
        result = run_cli(self.env, *args)
        return result.returncode, result.stdout, result.stderr


def worker_health(env: dict[str, str]) -> dict[str, Any] | None:
    """The /health report of the worker configured by ``env`` (200 or 503), None if silent."""
    return fetch_health(f"http://127.0.0.1:{env['APP_WEB_PORT']}/health")


def worker_connected(stack: ReplayStack) -> bool:
    """Whether the worker's /health says it is connected to its stream."""
    report = worker_health(stack.env)
    return bool(report and report["connected"])


def worker_metrics(env: dict[str, str]) -> dict[str, float]:
    """The worker's /metrics samples (``name{labels}`` -> value) of wikipulse's own metrics."""
    url = f"http://127.0.0.1:{env['APP_WEB_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("wikipulse_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def pipeline_environment(
    stack_env: dict[str, str], stream_url: str, **extra: str
) -> dict[str, str]:
    """A worker configuration of its own: unique topics and app id, fast reconnects."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        **stack_env,
        "KAFKA_TOPICS_RAW_NAME": f"test-{suffix}.raw",
        "KAFKA_TOPICS_TYPED_NAME": f"test-{suffix}.v1",
        "KAFKA_TOPICS_DEAD_LETTER_NAME": f"test-{suffix}.dead-letter",
        "APP_ID": f"test-worker-{suffix}",
        "APP_WEB_PORT": str(free_port()),
        "INGESTION_WIKIMEDIA_URL": stream_url,
        "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[]",
        "INGESTION_BACKOFF_INITIAL": "100 ms",
        "INGESTION_BACKOFF_MAX": "1 second",
        **extra,
    }
    ensure_topics(load_settings(environ=env))
    return env


class WorkerProcess:
    """``faust -A app.worker worker`` as a user starts it, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {**clean_environ(), **env}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "app.worker", "worker", "-l", "info",
                 "--web-port", self.env["APP_WEB_PORT"]],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.process is not None and pid_alive(self.process.pid)


class ReplayThread:
    """A ReplayServer on its own event loop in a background thread (the test's loop is free);
    ``server``: a ready-made one (e.g. a subclass that misbehaves in its own way)."""

    def __init__(
        self,
        events: list[bytes],
        options: ReplayOptions | None = None,
        *,
        server: ReplayServer | None = None,
    ) -> None:
        self.server = server if server is not None else ReplayServer(events, options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> ReplayThread:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def read_topic(
    settings: Settings, topic: str, partitions: int, *, committed: bool = True
) -> list[Any]:
    """Every record of ``topic`` (with ``partitions`` partitions) from its beginning to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any([await consumer.position(tp) < ends[tp] for tp in assigned]):
            batch = await consumer.getmany(*assigned, timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end")
        return records
    finally:
        await consumer.stop()


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    worker: WorkerProcess | None = None,
) -> None:
    """Poll ``condition``; fail on timeout, or at once when ``worker`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if worker is not None and not worker.alive:
            raise AssertionError(
                f"the worker exited while waiting for {what}; its log ({worker.log}):\n"
                + worker.log.read_text(errors="replace")[-3000:]
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


@contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(env, log)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


# ---- PostgreSQL ------------------------------------------------------------------------------


@contextmanager
def scratch_database(
    stack: Stack, environ: dict[str, str], revision: str | None = "head"
) -> Iterator[Settings]:
    """A new database owned by the configured user, migrated to ``revision`` (None: left empty);
    settings pointing at it (and at ``environ``). Dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    with stack.postgres.admin() as cursor:
        cursor.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(stack.settings.postgres.user)
            )
        )
    try:
        settings = load_settings(environ={**environ, "POSTGRES_DATABASE": name})
        if revision is not None:
            migrate(settings, revision)
        yield settings
    finally:
        with stack.postgres.admin() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
