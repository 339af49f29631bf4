"""The whole pipeline on secured services, started by ``Stack.up`` as ``./infra/wikipulse up
--replay FILE --once --speed max`` starts it: the worker, the Spark job and ``status`` speak
SASL_SSL (PLAIN) to Kafka, and every PostgreSQL client (Alembic, the Spark sink, the dashboard,
infra) uses TLS with ``sslmode=verify-full`` against a server that refuses anything else.

Then: the tables hold exactly what plain Python computes from the events served
(tests/spark/helpers.golden); neither password is in any log file of the home nor in any
output; the worker's and the dashboard's web servers listen on loopback only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import pytest

from app.config import ENV_ALIASES, ENV_VARS
from app.config.clients import libpq_params
from infra.processes import port_open
from infra.replay_server import ReplayMode
from infra.stack import Stack
from tests.events import synthetic
from tests.security.conftest import KAFKA_PASSWORD, POSTGRES_PASSWORD, SecureServices
from tests.spark.helpers import golden, user_edit_counts, wiki_activity

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (KAFKA_PASSWORD, POSTGRES_PASSWORD)
#: Files of the home that are configuration written by the tests, not logs or state.
NOT_LOGS = ("kafka/server.properties",)
#: What the replay server serves, once: 240 synthetic events of a July morning.
RAW_LINES = tuple(synthetic(240, seed=47, start=datetime(2026, 7, 2, 8, 59, 30, tzinfo=UTC)))


@dataclass
class PipelineRun:
    home: Path
    outputs: dict[str, str] = field(default_factory=dict)  # what each command printed
    listening: dict[str, set[str]] = field(default_factory=dict)  # component -> addresses
    events: int = 0  # sum(wiki_activity.events) when the wait ended
    batches: int = 0
    users: dict[tuple[datetime, str], tuple[datetime, int]] = field(default_factory=dict)
    wikis: dict[tuple[datetime, str], tuple[Any, ...]] = field(default_factory=dict)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _listening(pid: int | None) -> set[str]:
    """The addresses the process (and its children) accept connections on."""
    if pid is None:
        return set()
    process = psutil.Process(pid)
    addresses = set()
    for each in (process, *process.children(recursive=True)):
        try:
            connections = each.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue  # a short-lived child that has exited meanwhile listens on nothing
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                addresses.add(connection.laddr.ip.removeprefix("::ffff:"))  # Java: v4-mapped
    return addresses


def _run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def pipeline(
    secure_services: SecureServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelineRun]:
    events_file = tmp_path_factory.mktemp("secured-replay") / "events.ndjson"
    events_file.write_bytes(b"".join(line + b"\n" for line in RAW_LINES))
    extra = {
        "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[]",  # every namespace: all events count
        "POSTGRES_RETENTION_DAYS": "100000",  # the events are from July 2026
        "SPARK_TRIGGER_PROCESSING_TIME": "2 seconds",
        "SPARK_MASTER": "local[2]",
        "SPARK_SHUFFLE_PARTITIONS": "2",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    ours = set(ENV_VARS) | set(ENV_ALIASES) | {"WIKIPULSE_CONFIG_DIR", "WIKIPULSE_ENV_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(secure_services.environ)
    env.update(extra)
    run = PipelineRun(secure_services.home)
    collect = _Collect()
    collect.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous_level = root.level
    with pytest.MonkeyPatch.context() as patch:
        # The processes `up` starts read the configuration from the environment, as they do
        # when a user runs ./infra/wikipulse.
        for name in ours & set(os.environ):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        settings = secure_services.settings(**extra)
        stack = Stack(settings)
        progress: list[str] = []
        root.addHandler(collect)
        root.setLevel(logging.DEBUG)
        try:
            stack.up(
                progress=progress.append,
                replay=ReplayMode.for_file(events_file, speed=None, loop=False),
            )
            run.listening["worker"] = _listening(stack.worker.pid())
            run.listening["dashboard"] = _listening(stack.dashboard.pid())
            run.listening["spark"] = _listening(stack.spark.pid())
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with psycopg2.connect(**libpq_params(settings.postgres)) as connection:
                    cursor = connection.cursor()
                    cursor.execute(
                        "SELECT (SELECT coalesce(sum(events), 0)::bigint FROM wiki_activity),"
                        " (SELECT count(*) FROM pipeline_batches WHERE input_rows > 0)"
                    )
                    run.events, run.batches = cursor.fetchone()
                connection.close()
                if run.events >= len(RAW_LINES) and run.batches:  # progress follows the rows
                    break
                time.sleep(2)
            run.users = user_edit_counts(settings)
            run.wikis = wiki_activity(settings)
            run.outputs["status"] = _run([sys.executable, "-m", "infra.cli", "status"], env)
            run.outputs["alembic"] = _run([sys.executable, "-m", "alembic", "upgrade", "head"], env)
        finally:
            root.removeHandler(collect)
            root.setLevel(previous_level)
            stack.down(components=("dashboard", "spark", "worker", "replay"))
        run.outputs["up"] = "\n".join(progress)
        run.outputs["in-process logs"] = "\n".join(collect.lines)
    yield run


def test_data_flows_through_sasl_ssl_kafka_and_tls_postgres(pipeline: PipelineRun) -> None:
    assert pipeline.events == len(RAW_LINES), pipeline.outputs
    assert pipeline.batches > 0
    expected_users, expected_wikis = golden(RAW_LINES, window=timedelta(minutes=1))  # default
    assert sum(row[-1] for row in expected_wikis.values()) == len(RAW_LINES)
    assert pipeline.users == expected_users
    assert pipeline.wikis == expected_wikis
    status = pipeline.outputs["status"]
    assert "up   postgres" in status and "up   kafka" in status, status
    assert "topics ready" in status
    assert "exit 0" in pipeline.outputs["alembic"], pipeline.outputs["alembic"]


def test_no_password_in_any_log_or_output(pipeline: PipelineRun) -> None:
    searched = []
    for directory, _, files in os.walk(pipeline.home):  # symlinks (the jars) not followed
        for name in files:
            path = Path(directory) / name
            relative = str(path.relative_to(pipeline.home))
            if relative in NOT_LOGS or path.is_symlink() or not path.is_file():
                continue
            content = path.read_bytes()
            searched.append(relative)
            for secret in SECRETS:
                assert secret.encode() not in content, f"{secret!r} in {relative}"
    logs = [p for p in searched if p.endswith(".log")]
    for expected in ("logs/worker-wikipulse-worker.log", "logs/spark.log", "logs/dashboard.log"):
        assert expected in logs, logs
    assert "postgres/postgres.log" in logs and any(p.startswith("logs/kafka/") for p in logs)
    for name, output in pipeline.outputs.items():
        for secret in SECRETS:
            assert secret not in output, f"{secret!r} in the output of {name}"
    assert "Authenticated as wikipulse via PLAIN" in pipeline.outputs["in-process logs"]


def test_web_servers_listen_on_loopback_only(pipeline: PipelineRun) -> None:
    assert pipeline.listening["worker"] == {"127.0.0.1"}
    assert pipeline.listening["dashboard"] == {"127.0.0.1"}
    assert pipeline.listening["spark"] == {"127.0.0.1"}  # the driver and its UI


def test_the_secured_services_were_left_running(secure_services: SecureServices) -> None:
    """``down`` of the pipeline only: the module's other tests still have their services."""
    assert port_open("127.0.0.1", secure_services.ports["SASL_SSL"])
