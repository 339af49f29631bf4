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
from infra.home import Home
from infra.processes import (
    InfraError,
    ensure_port_free,
    read_pid,
    spawn,
    tail,
    terminate,
    wait_for,
    wait_started,
)
from infra.replay_server import ReplayMode, load_mode

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
class WorkerProcess:
    """One of the ``app.workers`` processes ``up`` runs (one consumer group): number 1 keeps the
    names of a single worker; number N's pid and log files are ``worker-<app id>-N``, its web
    server on ``app.web.port`` + N - 1."""

    settings: Settings
    home: Home
    number: int

    @property
    def stem(self) -> str:
        base = component_name(self.settings)
        return base if self.number == 1 else f"{base}-{self.number}"

    @property
    def name(self) -> str:
        """How ``status`` and ``up`` name it."""
        return COMPONENT if self.number == 1 else f"{COMPONENT}-{self.number}"

    @property
    def port(self) -> int:
        return self.settings.app.web.port + self.number - 1

    @property
    def url(self) -> str:
        return f"http://{self.settings.app.web.host}:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home.pidfile(self.stem)

    @property
    def output(self) -> Path:
        return self.home.logfile(self.stem)

    @property
    def source_file(self) -> Path:
        """Which stream it was started on (``up`` restarts it on a switch between the live
        stream and a replay)."""
        return self.home.run / f"{self.stem}.source.json"

    def pid(self) -> int | None:
        return read_pid(self.pidfile, str(worker_datadir(self.settings)))

    def source(self) -> dict[str, Any] | None:
        """``{"url": ..., "replay": bool}`` it follows, None if unknown."""
        try:
            return dict(json.loads(self.source_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def health(self) -> dict[str, Any] | None:
        web = self.settings.app.web.model_copy(update={"port": self.port})
        return fetch_health(health_url(self.settings.app.model_copy(update={"web": web})))


@dataclass(frozen=True)
class LocalWorker(SpawnedComponent):
    """Follows the live stream, or in replay mode (``replay.json`` in the home) the replay
    server's: ``app.workers`` processes of one consumer group, the leader holding the stream."""

    name = COMPONENT
    title = "the worker"
    not_ready = "the worker's web server did not answer"

    @property
    def processes(self) -> list[WorkerProcess]:
        return [WorkerProcess(self.settings, self.home, n) for n in range(1, self.count + 1)]

    @property
    def count(self) -> int:
        return self.settings.app.workers

    @property
    def first(self) -> WorkerProcess:
        return WorkerProcess(self.settings, self.home, 1)

    @property
    def stem(self) -> str:
        return self.first.stem

    @property
    def datadir(self) -> str:
        return str(worker_datadir(self.settings))

    @property
    def marker(self) -> str:
        return self.datadir

    @property
    def url(self) -> str:
        return self.first.url

    def pid(self) -> int | None:
        """The pid of the first of its processes that runs (of several, any one keeps the
        pipeline going); None when none does."""
        return next((pid for w in self.processes if (pid := w.pid()) is not None), None)

    def health(self) -> dict[str, Any] | None:
        """The /health report of the leader (the worker that holds the stream); of the first
        worker when none says it leads; None when none answers."""
        reports = [report for w in self.processes if (report := w.health()) is not None]
        return next((r for r in reports if r.get("leader")), reports[0] if reports else None)

    def healthy(self) -> bool:
        reports = [w.health() for w in self.processes]
        return all(r is not None and r.get("healthy") for r in reports)

    def command(self, process: WorkerProcess | None = None) -> list[str]:
        web = self.settings.app.web
        port = (process or self.first).port
        return [
            sys.executable, "-m", "faust", "--datadir", self.datadir,
            "-A", "app.worker", "worker", "--loglevel", "info",
            "--web-host", web.host, "--web-port", str(port),
        ]  # fmt: skip

    def start(self, *, timeout: float = 90.0, replay: ReplayMode | None = None) -> int:
        """Start the workers that do not run; with ``replay`` they follow its stream (a local
        replay server) instead of ``ingestion.wikimedia.url``, from its start when their raw
        topic is empty. A running one's pid once every web server answers."""
        stopped = [w for w in self.processes if w.pid() is None]
        env = dict(os.environ)
        replay_url = None if replay is None else replay.url
        if replay is not None:
            env["INGESTION_WIKIMEDIA_URL"] = replay.url
            if replay.since is not None:
                env["INGESTION_SINCE"] = replay.since
        url = replay_url or self.settings.ingestion.wikimedia.url
        source = json.dumps({"url": url, "replay": replay_url is not None})
        for worker in stopped:
            ensure_port_free(
                self.settings.app.web.host,
                worker.port,
                needed_by=f"the web server of {worker.name}",
                fix="set APP_WEB_PORT=<another port> (worker N listens on the port + N - 1)",
            )
        spawned = {}
        for worker in stopped:
            worker.source_file.parent.mkdir(parents=True, exist_ok=True)
            worker.source_file.write_text(source)
            # Its settings' web port is the one it serves on.
            worker_env = {**env, "APP_WEB_PORT": str(worker.port)}
            spawned[worker.number] = spawn(
                self.command(worker), pidfile=worker.pidfile, logfile=worker.output, env=worker_env
            )
        # By number: a worker's settings make it unhashable.
        number = wait_started(
            spawned, lambda: all(w.health() is not None for w in stopped), timeout=timeout
        )
        if number is not None:
            dead = WorkerProcess(self.settings, self.home, number)
            raise InfraError(
                f"{dead.name} exited during start-up ({dead.output}):\n{tail(dead.output, 30)}"
            )
        late = [w.name for w in stopped if w.health() is None]
        if late:
            raise InfraError(f"{self.not_ready} within {timeout:.0f} s: {', '.join(late)}")
        pid = self.pid()
        assert pid is not None
        return pid

    def up(self, progress: Progress) -> None:
        """Start the workers on the recorded mode's stream; restart them when they follow
        another one (after a switch between the live stream and a replay, or to a new replay
        port). When one has just started, wait a while for them to report healthy, or say why
        not."""
        mode = load_mode(self.home)
        replay_url = mode.url if mode is not None else None
        url = replay_url or self.settings.ingestion.wikimedia.url
        for worker in self.processes:
            pid = worker.pid()
            if pid is None:
                continue
            following = worker.source()
            was_replay = following is not None and bool(following.get("replay"))
            if (mode is not None or was_replay) and (following or {}).get("url") != url:
                progress(f"{worker.name}: restarting it to follow {url}")
                terminate(pid, timeout=self.stop_timeout)
                worker.source_file.unlink(missing_ok=True)
        running = {w.number for w in self.processes if w.pid() is not None}
        self.start(replay=mode)
        source = (
            f"following {url}"
            if self.settings.ingestion.enabled
            else "normalizing only (ingestion.enabled is false)"
        )
        for worker in self.processes:
            state = "running" if worker.number in running else "started"
            what = source if worker.number == 1 else "in the same consumer group"
            progress(f"{worker.name}: {state} (pid {worker.pid()}), {what}")
        if len(running) < self.count and not wait_for(self.healthy, timeout=HEALTHY_WAIT):
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
        notes = [error] if error else []
        if self.count > 1:
            notes += [_process_line(worker) for worker in self.processes]
            down = [w.name for w in self.processes if w.pid() is None]
            if down and pid is not None:
                detail += "; DOWN: " + ", ".join(down)
        healthy = self.healthy() if pid is not None else False
        return ComponentState(self.name, True, True, healthy, pid, self.url, detail, tuple(notes))

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
        """Stop this app id's workers; False when none was running."""
        stopped = False
        for worker in self.processes:
            pid = worker.pid()
            if pid is not None:
                terminate(pid, timeout=self.stop_timeout)
                stopped = True
            worker.pidfile.unlink(missing_ok=True)
            worker.source_file.unlink(missing_ok=True)
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


def _process_line(worker: WorkerProcess) -> str:
    """``status``'s note on one of several workers: its role and the raw partitions it
    normalizes."""
    pid = worker.pid()
    if pid is None:
        return f"{worker.name}: DOWN, {worker.url}"
    report = worker.health()
    if report is None:
        return f"{worker.name}: pid {pid}, {worker.url}, not answering"
    role = "leader (holds the stream)" if report.get("leader") else "standby"
    partitions = report.get("raw_partitions")
    owned = ", ".join(map(str, partitions)) if partitions else "none"
    return f"{worker.name}: pid {pid}, {worker.url}, {role}, raw partitions {owned}"
