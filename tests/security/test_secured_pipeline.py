"""The whole pipeline on secured services, started by ``Stack.up`` as ``./infra/wikipulse up
--replay`` starts it: the worker, the Spark job and ``status`` speak SASL_SSL (PLAIN) to Kafka,
and every PostgreSQL client (Alembic, the Spark sink, the dashboard, infra) uses TLS with
``sslmode=verify-full`` against a server that refuses anything else.

Then: data went all the way through; neither password is in any log file of the home nor in
any output; the worker's and the dashboard's web servers listen on loopback only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg2
import pytest

from app.config import ENV_ALIASES, ENV_VARS
from app.config.clients import libpq_params
from infra.processes import port_open
from infra.replay_server import ReplayMode
from infra.stack import Stack
from tests.security.conftest import KAFKA_PASSWORD, POSTGRES_PASSWORD, SecureServices

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (KAFKA_PASSWORD, POSTGRES_PASSWORD)
#: Files of the home that are configuration written by the tests, not logs or state.
NOT_LOGS = ("kafka/server.properties",)


@dataclass
class PipelineRun:
    home: Path
    outputs: dict[str, str] = field(default_factory=dict)  # what each command printed
    listening: dict[str, set[str]] = field(default_factory=dict)  # component -> addresses
    rows: int = 0
    batches: int = 0


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
        for connection in each.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN:
                addresses.add(connection.laddr.ip.removeprefix("::ffff:"))  # Java: v4-mapped
    return addresses


def _run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def pipeline(secure_services: SecureServices) -> Iterator[PipelineRun]:
    extra = {
        "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[]",
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
                replay=ReplayMode.synthetic(),  # what `up --replay` serves
            )
            run.listening["worker"] = _listening(stack.worker.pid())
            run.listening["dashboard"] = _listening(stack.dashboard.pid())
            run.listening["spark"] = _listening(stack.spark.pid())
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with psycopg2.connect(**libpq_params(settings.postgres)) as connection:
                    cursor = connection.cursor()
                    cursor.execute(
                        "SELECT (SELECT count(*) FROM user_edit_counts),"
                        " (SELECT count(*) FROM pipeline_batches WHERE input_rows > 0)"
                    )
                    run.rows, run.batches = cursor.fetchone()
                connection.close()
                if run.rows and run.batches:
                    break
                time.sleep(2)
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
    assert pipeline.rows > 0, pipeline.outputs
    assert pipeline.batches > 0
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
