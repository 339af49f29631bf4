"""The ingestion worker as a background process: ``faust -A app.worker worker``."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings
from app.config.names import worker_datadir
from app.health import fetch_health, health_url
from infra.component import ComponentState, Progress, SpawnedComponent, format_age
from infra.processes import ensure_port_free, read_pid, terminate, wait_for
from infra.replay_server import load_mode

COMPONENT = "worker"
#: How long `up` waits for a started worker to report healthy before it moves on.
HEALTHY_WAIT = 30.0


def component_name(settings: Settings) -> str:
    """Pid and log files are per app id: a rebuild worker runs beside the main one."""
    return f"{COMPONENT}-{settings.app.id}"


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


@dataclass(frozen=True)
class LocalWorker(SpawnedComponent):
    """Follows the live stream, or in replay mode (``replay.json`` in the home) the replay
    server's."""

    name = COMPONENT
    title = "the worker"
    not_ready = "the worker's web server did not answer"

    @property
    def stem(self) -> str:
        return component_name(self.settings)

    @property
    def datadir(self) -> str:
        return str(worker_datadir(self.settings))

    @property
    def marker(self) -> str:
        return self.datadir

    @property
    def url(self) -> str:
        web = self.settings.app.web
        return f"http://{web.host}:{web.port}"

    @property
    def source_file(self) -> Path:
        """Which stream the running worker was started on (``up`` restarts it on a switch
        between the live stream and a replay)."""
        return self.home.run / f"{self.stem}.source.json"

    def source(self) -> dict[str, Any] | None:
        """``{"url": ..., "replay": bool}`` of the running worker, None if unknown."""
        try:
            return dict(json.loads(self.source_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def health(self) -> dict[str, Any] | None:
        """The worker's /health report, or None when its web server does not answer."""
        return fetch_health(health_url(self.settings.app))

    def healthy(self) -> bool:
        report = self.health()
        return bool(report and report.get("healthy"))

    def command(self) -> list[str]:
        web = self.settings.app.web
        return [
            sys.executable, "-m", "faust", "--datadir", self.datadir,
            "-A", "app.worker", "worker", "--loglevel", "info",
            "--web-host", web.host, "--web-port", str(web.port),
        ]  # fmt: skip

    def start(self, *, timeout: float = 90.0, replay_url: str | None = None) -> int:
        """Start the worker unless it runs; with ``replay_url`` it follows that stream (a local
        replay server) instead of ``ingestion.wikimedia.url``. Its pid once its web server
        answers."""
        pid = self.pid()
        if pid is not None:
            return pid
        web = self.settings.app.web
        ensure_port_free(
            web.host,
            web.port,
            needed_by="the worker's web server",
            fix="set APP_WEB_PORT=<another port>",
        )
        env = None
        if replay_url is not None:
            env = {**os.environ, "INGESTION_WIKIMEDIA_URL": replay_url}
        url = replay_url or self.settings.ingestion.wikimedia.url
        source = json.dumps({"url": url, "replay": replay_url is not None})
        self.source_file.parent.mkdir(parents=True, exist_ok=True)
        self.source_file.write_text(source)
        return self.spawn_and_wait(
            self.command(), ready=lambda: self.health() is not None, timeout=timeout, env=env
        )

    def up(self, progress: Progress) -> None:
        """Start the worker on the recorded mode's stream; restart it when it follows another
        one (after a switch between the live stream and a replay, or to a new replay port).
        When it has just started, wait a while for it to report healthy, or say why not."""
        mode = load_mode(self.home)
        replay_url = mode.url if mode is not None else None
        url = replay_url or self.settings.ingestion.wikimedia.url
        if self.pid() is not None:
            following = self.source()
            was_replay = following is not None and bool(following.get("replay"))
            if (mode is not None or was_replay) and (following or {}).get("url") != url:
                progress(f"worker: restarting it to follow {url}")
                self.stop()
        was_running = self.pid() is not None
        pid = self.start(replay_url=replay_url)
        source = (
            f"following {url}"
            if self.settings.ingestion.enabled
            else "normalizing only (ingestion.enabled is false)"
        )
        progress(f"worker: {'running' if was_running else 'started'} (pid {pid}), {source}")
        if not was_running and not wait_for(self.healthy, timeout=HEALTHY_WAIT):
            progress(
                f"worker: not healthy after {HEALTHY_WAIT:.0f} s: is the stream "
                "reachable, does it send events? After a crash the worker first waits for "
                "Kafka to drop its old self from the consumer group (about a minute). See "
                "`./infra/wikipulse logs worker`"
            )
            report = self.health()
            why = stream_error(report) if report is not None else None
            if why is not None:
                progress(f"worker: {why}")

    def state(self) -> ComponentState:
        pid = self.pid()
        report = self.health() if pid is not None else None
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
        notes = (error,) if error else ()
        return ComponentState(self.name, True, True, healthy, pid, self.url, detail, notes)

    def offline_hint(self) -> str | None:
        """When the worker follows the live stream and is not connected to it: a line saying
        why and how to run without it (a replay); else None."""
        if load_mode(self.home) is not None or not self.settings.ingestion.enabled:
            return None
        report = self.health() if self.pid() is not None else None
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

    def stop(self) -> bool:
        stopped = super().stop()
        self.source_file.unlink(missing_ok=True)
        return stopped

    def down(self) -> list[str]:
        """Stop every worker of this home (any app id); their names."""
        stopped = []
        for pidfile in sorted(self.home.run.glob(f"{COMPONENT}-*.pid")):
            pid = read_pid(pidfile, str(self.home.root))
            if pid is not None:
                terminate(pid, timeout=self.stop_timeout)
                stopped.append(pidfile.stem)
            pidfile.unlink(missing_ok=True)
            pidfile.with_name(f"{pidfile.stem}.source.json").unlink(missing_ok=True)
        return stopped
