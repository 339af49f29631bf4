"""The dashboard as a background process: ``streamlit run dashboards/app.py``."""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass

from app.config import Settings
from infra.home import PROJECT_ROOT, Home
from infra.processes import (
    InfraError,
    ensure_port_free,
    pid_alive,
    read_pid,
    spawn,
    stop_recorded,
    tail,
    wait_for,
)

COMPONENT = "dashboard"
APP_FILE = PROJECT_ROOT / "dashboards" / "app.py"


@dataclass(frozen=True)
class LocalDashboard:
    settings: Settings
    home: Home

    @property
    def url(self) -> str:
        return f"http://{self.settings.dashboard.host}:{self.settings.dashboard.port}"

    def pid(self) -> int | None:
        # The command line names the server port; the pid file lives in this home.
        return read_pid(self.home.pidfile(COMPONENT), str(APP_FILE))

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=3) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self, *, timeout: float = 60.0) -> int:
        pid = self.pid()
        if pid is not None:
            return pid
        dashboard = self.settings.dashboard
        ensure_port_free(
            dashboard.host,
            dashboard.port,
            needed_by="the dashboard",
            fix="set DASHBOARD_PORT=<another port>",
        )
        logfile = self.home.logfile(COMPONENT)
        command = [
            sys.executable, "-m", "streamlit", "run", str(APP_FILE),
            "--server.address", dashboard.host, "--server.port", str(dashboard.port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
        ]  # fmt: skip
        pid = spawn(
            command, pidfile=self.home.pidfile(COMPONENT), logfile=logfile, cwd=PROJECT_ROOT
        )
        wait_for(lambda: not pid_alive(pid) or self.healthy(), timeout=timeout)
        if not pid_alive(pid):
            raise InfraError(f"the dashboard exited during start-up ({logfile}):\n{tail(logfile)}")
        if not self.healthy():
            raise InfraError(f"the dashboard did not answer within {timeout:.0f} s")
        return pid

    def stop(self) -> bool:
        return stop_recorded(self.pid(), self.home.pidfile(COMPONENT), timeout=20)
