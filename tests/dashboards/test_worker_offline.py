"""The health panel names the worker's last connection error, when it happened and when the next
attempt is: a real worker (tests.harness) pointed at a closed local port, its /health read by the
page as AppTest runs it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.config import Settings
from infra.dashboard import APP_FILE
from infra.processes import free_port
from infra.replay.wire import STREAM_PATH
from tests.harness import pipeline_environment, running_worker, wait_until, worker_health

pytestmark = pytest.mark.integration

INSTANT = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC"


def shown_instant(text: str, label: str) -> datetime:
    """The time the page gives after ``label`` (``2026-06-20 12:31:05 UTC``)."""
    match = re.search(f"{label} {INSTANT}", text)
    assert match, f"no {label!r} in {text!r}"
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def test_the_health_panel_names_the_workers_connection_error(
    seeded: tuple[Settings, dict[str, str]],
    stack_env: dict[str, str],
    use_environ: Callable[[dict[str, str]], None],
    frozen_clock: Callable[[datetime], None],
    tmp_path: Path,
) -> None:
    _, environ = seeded
    port = free_port()  # nobody listens there: every connection is refused
    env = pipeline_environment(stack_env, f"http://127.0.0.1:{port}{STREAM_PATH}")
    started = datetime.now(UTC)
    with running_worker(env, tmp_path / "worker.log") as worker:
        wait_until(
            lambda: bool((worker_health(env) or {}).get("last_error")),
            90,
            "a connection error in /health",
            worker=worker,
        )
        use_environ({**environ, "APP_WEB_PORT": env["APP_WEB_PORT"]})
        page = AppTest.from_file(str(APP_FILE), default_timeout=60)
        page.run()
        rendered = datetime.now(UTC)
    assert not page.exception, page.exception

    assert {m.label: m.value for m in page.metric}["Worker"] == "unhealthy"
    [warning] = [w.value for w in page.warning if "not connected" in w.value]
    text = re.sub(r"\\(.)", r"\1", warning)  # the message is shown escaped, as plain text
    assert "The worker is not connected to the stream" in text
    said = rf"\(refused(, \d+ failures in a row)?\): connection refused to 127\.0\.0\.1:{port}\. "
    assert re.search(said, text), text
    # the page shows whole seconds: the error happened while this test ran, and the next
    # attempt is at most the configured 1 s of backoff later
    at = shown_instant(text, "Last error at")
    assert started - timedelta(seconds=1) <= at <= rendered
    next_attempt = shown_instant(text, "Next attempt at")
    assert at <= next_attempt <= at + timedelta(seconds=2)
