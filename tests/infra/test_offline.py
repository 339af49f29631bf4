"""A worker that cannot reach its stream says why: /health, `status` and `up`'s closing hint name
the last connection error, when it happened and when the next attempt is.

The worker runs as `up` starts it (infra.worker.LocalWorker, pid file in the session's home), on
the session's Kafka, pointed at a closed local port or at a replay server that answers with an
HTTP error; the expectations come from what the test set up (the port, the status, the
Retry-After, the configured backoff), never from the code under test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from yarl import URL

from app.config import ENV_ALIASES, ENV_VARS, load_settings
from infra.processes import free_port
from infra.replay.server import ReplayOptions
from infra.replay.wire import STREAM_PATH
from infra.stack import Stack
from infra.worker import LocalWorker
from tests.events import synthetic
from tests.harness import (
    ReplayThread,
    clean_environ,
    pipeline_environment,
    run_cli,
    status_line,
    wait_until,
    worker_health,
)

pytestmark = pytest.mark.integration

OURS = set(ENV_VARS) | set(ENV_ALIASES) | {"WIKIPULSE_CONFIG_DIR", "WIKIPULSE_ENV_FILE"}
#: `status`'s line under the worker's: "last error 3 s ago (<reason>[, N failures in a row]):
#: <message>; next attempt in 2 s" (or "in 4 min", or "now").
NOTE = re.compile(
    r"last error (?P<ago>\d+) s ago \((?P<reason>\w+)(?:, (?P<failures>\d+) failures in a row)?\): "
    r"(?P<message>.+); next attempt (?:in (?P<due>\d+) (?P<unit>s|min)|now)"
)

Started = Callable[..., tuple[dict[str, str], float]]


@pytest.fixture
def offline_worker(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Started]:
    """``start(url, **settings)`` starts a worker as ``up`` does, on the live stream ``url``:
    its environment and when it was started (epoch seconds). Stopped after the test."""
    workers: list[LocalWorker] = []

    def start(url: str, **extra: str) -> tuple[dict[str, str], float]:
        env = pipeline_environment(stack_env, url, **extra)
        # LocalWorker.start passes its own environment on, as `./infra/wikipulse up` does.
        for name in OURS:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(environ=env)
        worker = LocalWorker(settings, Stack(settings).home)
        workers.append(worker)
        started = time.time()
        worker.start()
        return env, started

    yield start
    for worker in workers:
        worker.stop()


def last_error(env: dict[str, str]) -> dict[str, Any]:
    """The worker's /health once it reports a connection error."""
    reports: list[dict[str, Any]] = []

    def failed() -> bool:
        report = worker_health(env)
        reports[:] = [report] if report else []
        return bool(report and report.get("last_error"))

    wait_until(failed, 90, "a connection error in /health")
    return reports[0]


def status_note(env: dict[str, str]) -> tuple[str, re.Match[str]]:
    """``status``'s worker line and the note under it (parsed)."""
    result = run_cli({**clean_environ(), **env}, "status")
    lines = result.stdout.splitlines()
    worker = status_line(result.stdout, "worker")
    note = lines[lines.index(worker) + 1].strip()
    match = NOTE.fullmatch(note)
    assert match, f"no error note under the worker's line:\n{result.stdout}"
    return worker, match


def test_a_refused_connection_is_named_with_its_time_and_the_next_attempt(
    offline_worker: Started,
) -> None:
    port = free_port()  # nobody listens there: every connection is refused
    env, started = offline_worker(f"http://127.0.0.1:{port}{STREAM_PATH}")

    report = last_error(env)
    read_at = time.time()
    error = report["last_error"]
    assert report["healthy"] is False and report["connected"] is False
    assert error["reason"] == "refused"
    assert error["message"] == f"connection refused to 127.0.0.1:{port}"
    assert started <= error["at"] <= read_at
    # the configured backoff (100 ms initial, 1 s at most): a wait between 10 ms and 1 s; the
    # two epoch floats (~1.8e9 s) differ by the wait to within a microsecond, not exactly
    assert 0.01 - 1e-6 <= error["next_attempt"] - error["at"] <= 1.0 + 1e-6
    assert error["failures"] >= 1

    worker, note = status_note(env)
    assert "DOWN" in worker and "UNHEALTHY (not connected to the stream)" in worker
    assert "connected=False" in worker
    assert note["message"] == f"connection refused to 127.0.0.1:{port}"
    assert note["reason"] == "refused"
    # the last error is never older than the test, and the next attempt is at most 1 s away
    assert int(note["ago"]) <= time.time() - started + 1
    assert note["due"] is None or (note["unit"] == "s" and int(note["due"]) <= 1)
    assert int(note["failures"] or 1) >= error["failures"]

    # `up` ends with this hint on the live stream (this home has no replay mode)
    hint = Stack(load_settings(environ=env)).offline_hint()
    assert hint is not None
    assert f"connection refused to 127.0.0.1:{port}" in hint
    assert hint.endswith("./infra/wikipulse up --replay")


def test_throttling_names_the_status_and_the_wait_the_server_asked_for(
    offline_worker: Started,
) -> None:
    options = ReplayOptions(fail_first=100, fail_status=429, retry_after=90)
    with ReplayThread(synthetic(3), options) as replay:
        port = URL(replay.url).port
        # a maximum backoff of 1 min lets the server ask for up to 5 min (5 × the maximum)
        env, started = offline_worker(replay.url, INGESTION_BACKOFF_MAX="1 minute")
        report = last_error(env)
        read_at = time.time()
        error = report["last_error"]
        assert error["reason"] == "throttled"
        assert error["message"] == f"HTTP 429 from 127.0.0.1:{port} (Retry-After: 90 s)"
        assert started <= error["at"] <= read_at
        assert error["next_attempt"] - error["at"] == pytest.approx(90, abs=0.01)

        _, note = status_note(env)
        assert note["message"] == error["message"] and note["reason"] == "throttled"
        elapsed = time.time() - error["at"]
        assert int(note["ago"]) <= elapsed + 1
        assert note["unit"] == "s" and 90 - elapsed - 1 <= int(note["due"]) <= 90
        # the worker honours the wait: one attempt so far
        assert replay.server.connections == 1


def test_a_server_error_is_named_with_its_status(offline_worker: Started) -> None:
    with ReplayThread(synthetic(3), ReplayOptions(fail_first=100, fail_status=503)) as replay:
        port = URL(replay.url).port
        # a first wait of 30 s to 5 min (jitter up to the initial 5 min, at least a tenth of
        # it): time enough to look before the second attempt
        env, started = offline_worker(
            replay.url, INGESTION_BACKOFF_INITIAL="5 minutes", INGESTION_BACKOFF_MAX="5 minutes"
        )
        error = last_error(env)["last_error"]
        assert error["reason"] == "server_error"
        assert error["message"] == f"HTTP 503 from 127.0.0.1:{port}"
        assert started <= error["at"] <= time.time()
        assert 30.0 - 1e-6 <= error["next_attempt"] - error["at"] <= 300.0 + 1e-6  # epoch floats

        _, note = status_note(env)
        assert note["message"] == f"HTTP 503 from 127.0.0.1:{port}"
        assert note["reason"] == "server_error"
        elapsed = time.time() - error["at"]
        due = int(note["due"]) * (60 if note["unit"] == "min" else 1)
        assert 30 - elapsed - 1 <= due <= 300  # (minutes are rounded: at most 5 min)
        assert replay.server.connections == 1
