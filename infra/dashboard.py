"""The dashboard as a background process: ``streamlit run dashboards/wikipulse_dashboard.py``."""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass

from infra.component import ComponentState, SpawnedComponent
from infra.home import PROJECT_ROOT
from infra.processes import ensure_port_free

APP_FILE = PROJECT_ROOT / "dashboards" / "wikipulse_dashboard.py"


@dataclass(frozen=True)
class LocalDashboard(SpawnedComponent):
    name = "dashboard"
    title = "the dashboard"
    not_ready = "the dashboard did not answer"
    stop_timeout = 20.0

    @property
    def url(self) -> str:
        return f"http://{self.settings.dashboard.host}:{self.settings.dashboard.port}"

    @property
    def marker(self) -> str:
        return str(APP_FILE)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=3) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def command(self) -> list[str]:
        dashboard = self.settings.dashboard
        return [
            sys.executable, "-m", "streamlit", "run", str(APP_FILE),
            "--server.address", dashboard.host, "--server.port", str(dashboard.port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
        ]  # fmt: skip

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
        return self.spawn_and_wait(
            self.command(), ready=self.healthy, timeout=timeout, cwd=PROJECT_ROOT
        )

    def where(self) -> str:
        return f" at {self.url}"

    def state(self) -> ComponentState:
        pid = self.pid()
        healthy = pid is not None and self.healthy()
        detail = "serving" if healthy else ("not answering" if pid else "not running")
        return ComponentState(self.name, True, True, healthy, pid, self.url, detail)
