"""./infra/wikipulse as a user runs it: up (twice), status, psql, logs, recovery, down --purge.

These tests run the command line in a home and on ports of their own, so they start a second
Kafka and PostgreSQL next to the session's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.replay import ReplayOptions
from infra.processes import pid_alive, wait_for
from tests.conftest import make_home, stack_environment
from tests.harness import ReplayThread, clean_environ
from tests.realdata import CURRENT, lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WIKIPULSE = str(ROOT / "infra" / "wikipulse")


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    home = make_home("wikipulse-cli-")
    env = clean_environ()
    env.update(stack_environment(home))
    # The worker follows a local replay of real events (no internet here), then waits.
    sample = list(lines(CURRENT)[:50])
    with ReplayThread(sample, ReplayOptions(hold_open=True)) as replay:
        env["INGESTION_WIKIMEDIA_URL"] = replay.url
        env["INGESTION_WIKIMEDIA_FILTERS_NAMESPACES"] = "[]"
        env["SPARK_TRIGGER_PROCESSING_TIME"] = "2 seconds"
        env["POSTGRES_RETENTION_DAYS"] = "100000"  # the recorded events are from June 2026
        yield env
    subprocess.run([WIKIPULSE, "down", "--purge"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(home, ignore_errors=True)


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WIKIPULSE, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd="/"
    )


def pids(home: Path) -> dict[str, int]:
    found = {}
    for component, name in (
        ("kafka", "kafka"),
        ("worker", "worker-wikipulse-worker"),
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


def test_lifecycle(cli_env: dict[str, str]) -> None:
    home = Path(cli_env["WIKIPULSE_HOME"])

    first = run(cli_env, "up")
    assert first.returncode == 0, first.stderr
    assert "postgres: started" in first.stdout and "kafka: started" in first.stdout
    assert "worker: started" in first.stdout and "spark: started" in first.stdout
    dashboard_url = f"http://127.0.0.1:{cli_env['DASHBOARD_PORT']}"
    assert "dashboard: started" in first.stdout and dashboard_url in first.stdout
    started = pids(home)
    assert set(started) == {"kafka", "postgres", "worker", "spark", "dashboard"}
    with urllib.request.urlopen(f"{dashboard_url}/_stcore/health", timeout=10) as response:
        assert response.read() == b"ok"
    assert all(pid_alive(pid) for pid in started.values())

    # A second `up` is harmless: nothing restarted.
    second = run(cli_env, "up")
    assert second.returncode == 0, second.stderr
    assert "postgres: running" in second.stdout and "kafka: running" in second.stdout
    assert "worker: running" in second.stdout and "spark: running" in second.stdout
    assert "dashboard: running" in second.stdout
    assert pids(home) == started

    table = run(cli_env, "psql", "-c", r"\d user_edit_counts")
    assert table.returncode == 0, table.stderr
    assert '"user_edit_counts_pkey" PRIMARY KEY, btree (window_start, user_name)' in table.stdout
    scalar = run(cli_env, "psql", "-At", "-c", "SELECT count(*) FROM recent_user_activity")
    assert scalar.stdout.strip() == "0"

    def all_up() -> bool:
        return run(cli_env, "status").returncode == 0

    assert wait_for(all_up, timeout=60), run(cli_env, "status").stdout
    healthy = run(cli_env, "status")
    assert "database wiki_streaming, schema" in healthy.stdout
    assert "topics ready" in healthy.stdout and "valid=" in healthy.stdout
    # The whole pipeline: replayed events reach PostgreSQL through the worker and Spark.
    total = ("psql", "-At", "-c", "SELECT coalesce(sum(events), 0) FROM wiki_activity")

    def aggregated() -> bool:
        return run(cli_env, *total).stdout.strip() == "50"

    assert wait_for(aggregated, timeout=120), run(cli_env, *total).stdout

    logs = run(cli_env, "logs", "kafka", "--no-follow", "-n", "100000")
    assert logs.returncode == 0 and "Kafka Server started" in logs.stdout

    # A crashed broker: status says so, `up` brings back only the missing piece.
    os.kill(started["kafka"], signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(started["kafka"]), timeout=20)
    down = run(cli_env, "status")
    assert down.returncode == 1
    kafka_line = next(line for line in down.stdout.splitlines() if " kafka " in line)
    assert "DOWN" in kafka_line and "not running" in kafka_line

    recovered = run(cli_env, "up")
    assert recovered.returncode == 0, recovered.stderr
    after = pids(home)
    assert after["postgres"] == started["postgres"]
    assert after["kafka"] != started["kafka"] and pid_alive(after["kafka"])
    assert wait_for(all_up, timeout=90), run(cli_env, "status").stdout

    purge = run(cli_env, "down", "--purge")
    assert purge.returncode == 0, purge.stderr
    assert wait_for(lambda: not any(pid_alive(pid) for pid in after.values()), timeout=30)
    assert not home.exists()


def test_port_in_use_is_a_clear_error(cli_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(cli_env["POSTGRES_PORT"])))
        squatter.listen()
        result = run(cli_env, "up")
    assert result.returncode == 1
    assert "already in use" in result.stderr and "POSTGRES_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_java_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    # A PATH with what the wrapper needs but no java.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "cksum", "dirname", "env", "python3", "tail"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**cli_env, "PATH": str(bin_dir)}
    result = run(env, "up")
    assert result.returncode == 1
    assert "Java is needed" in result.stderr and "Traceback" not in result.stderr
