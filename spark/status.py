"""The job's status file (``spark/job.py --status-file PATH``): its health signal.

The job replaces the file atomically when its query starts, after each batch, while it waits for
data, and when the query ends; ``./infra/wikipulse up`` waits for ``running``, ``status`` reads
it. One small JSON object: ``state``, ``at`` (epoch seconds of the update), ``query``,
``batch`` (the newest batch run, or None), ``error`` (why it failed, or None).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUNNING = "running"
STOPPED = "stopped"
FAILED = "failed"


@dataclass
class StatusFile:
    path: Path
    query: str
    batch: int | None = field(default=None, init=False)

    def write(self, state: str, *, batch: int | None = None, error: str | None = None) -> None:
        """Replace the file (never half-written: a reader sees the old one or the new one)."""
        if batch is not None:
            self.batch = batch
        record = {
            "state": state,
            "at": time.time(),
            "query": self.query,
            "batch": self.batch,
            "error": error,
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(record))
            os.replace(temporary, self.path)
        except OSError as error_:
            # The signal is for the tools: the query goes on without it.
            log.warning("could not write the status file %s: %s", self.path, error_)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status the job last wrote to ``path``; None when there is none (yet)."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
