"""The client of the worker's ``/health`` endpoint: ``status``, the dashboard and the tests read
the worker's report through it. Standard library only (the dashboard imports it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from app.config.settings import AppSettings

#: Seconds the worker gets to answer before it counts as not answering.
TIMEOUT = 3.0


def health_url(web: AppSettings) -> str:
    """Where the worker of these settings answers (a wildcard bind is reached on loopback)."""
    host = web.web.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{web.web.port}/health"


def fetch_health(url: str, timeout: float = TIMEOUT) -> dict[str, Any] | None:
    """The worker's report: its JSON body on 200 (healthy) or 503 (running, not healthy);
    None when nothing answers with a JSON object."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            report = json.load(response)
    except urllib.error.HTTPError as error:
        try:
            report = json.load(error)
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    return dict(report) if isinstance(report, dict) else None
