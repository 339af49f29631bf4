"""The ingestion worker as a background process: ``faust -A app.worker worker``."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings
from app.config.names import worker_datadir
from app.health import fetch_health, health_url
from infra.home import Home
from infra.processes import (
    InfraError,
    ensure_port_free,
    pid_alive,
    read_pid,
    spawn,
    stop_recorded,
    tail,
    terminate,
    wait_for,
)

COMPONENT = "worker"


def component_name(settings: Settings) -> str:
    """Pid and log files are per app id: a rebuild worker runs beside the main one."""
    return f"{COMPONENT}-{settings.app.id}"


@dataclass(frozen=True)
class LocalWorker:
    settings: Settings
    home: Home

    @property
    def name(self) -> str:
        return component_name(self.settings)

    @property
    def datadir(self) -> str:
        return str(worker_datadir(self.settings))

    @property
    def url(self) -> str:
        web = self.settings.app.web
        return f"http://{web.host}:{web.port}"

    def pid(self) -> int | None:
        return read_pid(self.home.pidfile(self.name), self.datadir)

    @property
    def source_file(self) -> Path:
        """Which stream the running worker was started on (``up`` restarts it on a switch
        between the live stream and a replay)."""
        return self.home.run / f"{self.name}.source.json"

    def source(self) -> dict[str, Any] | None:
        """``{"url": ..., "replay": bool}`` of the running worker, None if unknown."""
        try:
            return dict(json.loads(self.source_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def health(self) -> dict[str, Any] | None:
        """The worker's /health report, or None when its web server does not answer."""
        return fetch_health(health_url(self.settings.app))

    def start(self, *, timeout: float = 90.0, replay_url: str | None = None) -> int:
        """Start the worker unless it runs; with ``replay_url`` it follows that stream (a local
        replay server) instead of ``ingestion.wikimedia.url``."""
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
        logfile = self.home.logfile(self.name)
        command = [
            sys.executable, "-m", "faust", "--datadir", self.datadir,
            "-A", "app.worker", "worker", "--loglevel", "info",
            "--web-host", web.host, "--web-port", str(web.port),
        ]  # fmt: skip
        env = None
        if replay_url is not None:
            env = {**os.environ, "INGESTION_WIKIMEDIA_URL": replay_url}
        pid = spawn(command, pidfile=self.home.pidfile(self.name), logfile=logfile, env=env)
        url = replay_url or self.settings.ingestion.wikimedia.url
        self.source_file.write_text(json.dumps({"url": url, "replay": replay_url is not None}))
        wait_for(lambda: not pid_alive(pid) or self.health() is not None, timeout=timeout)
        if not pid_alive(pid):
            raise InfraError(f"the worker exited during start-up ({logfile}):\n{tail(logfile, 30)}")
        if self.health() is None:
            raise InfraError(f"the worker's web server did not answer within {timeout:.0f} s")
        return pid

    def healthy(self) -> bool:
        report = self.health()
        return bool(report and report.get("healthy"))

    def stop_all(self) -> list[str]:
        """Stop every worker of this home (any app id); return their names."""
        stopped = []
        for pidfile in sorted(self.home.run.glob(f"{COMPONENT}-*.pid")):
            pid = read_pid(pidfile, str(self.home.root))
            if pid is not None:
                terminate(pid, timeout=30)
                stopped.append(pidfile.stem)
            pidfile.unlink(missing_ok=True)
            pidfile.with_name(f"{pidfile.stem}.source.json").unlink(missing_ok=True)
        return stopped

    def stop(self) -> bool:
        stopped = stop_recorded(self.pid(), self.home.pidfile(self.name), timeout=30)
        self.source_file.unlink(missing_ok=True)
        return stopped
