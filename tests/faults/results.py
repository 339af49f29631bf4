"""The figures of the fault suite: what each fault test measured, collected into one JSON file.

Every test of ``tests/faults`` records its figures with the ``record`` fixture (see conftest):
events in, typed out, lost, doubled, dead-lettered, the recovery time from the end of the fault
to the pipeline being caught up, and what else it measured (``details``). The file is
``$WIKIPULSE_RESULTS`` when set, else ``faults-results.json`` in pytest's base temporary
directory; it is rewritten after every test, so an interrupted run keeps what it measured.
``python -m tests.faults.publish RESULTS.json`` turns it into tests/README.md's Reliability section.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_VARIABLE = "WIKIPULSE_RESULTS"
RESULTS_NAME = "faults-results.json"
SCHEMA = "wikipulse/fault-results/1"


@dataclass(frozen=True)
class Fault:
    id: str
    title: str
    injection: str  # how the suite causes it, in a few words


#: The faults the suite injects, in the order tests/README.md lists them (the issue's numbering).
FAULTS: tuple[Fault, ...] = (
    Fault(
        "1",
        "SSE stream cut, replay server restarted",
        "connection aborted every 25 events; the replay server SIGKILLed mid-stream, "
        "brought back by `up`",
    ),
    Fault(
        "2",
        "Worker SIGKILLed mid-stream",
        "`kill -9` of the worker, brought back by `up`",
    ),
    Fault(
        "3",
        "Kafka broker SIGKILLed for 20 s",
        "`kill -9` of the broker while events flow; `up` 20 s later",
    ),
    Fault(
        "4",
        "Spark driver SIGKILLed three times",
        "`kill -9` of the driver at three seeded-random moments, `up` after each",
    ),
    Fault(
        "5",
        "PostgreSQL stopped for 30 s",
        "`down postgres` while events flow; `up` 30 s later",
    ),
    Fault(
        "6",
        "Stream answering 429, then 503",
        "every connection refused for 8 s: 429 with `Retry-After: 2`, then 503",
    ),
    Fault(
        "8",
        "Bad input",
        "the 36-kind bad-input corpus, a duplicate, a canary and malformed frames "
        "among synthetic events, each right after the event before it",
    ),
    Fault(
        "C1",
        "Kafka broker SIGKILLed, cluster layout",
        "`kill -9` of the broker leading the most typed-topic partitions, of three, while "
        "events flow; `up` once the pipeline has caught up with two",
    ),
    Fault(
        "C2",
        "Spark worker SIGKILLed, cluster layout",
        "`kill -9` of a standalone worker and the executor it runs, of two, while events flow; "
        "`up` once the pipeline has caught up with the other",
    ),
    Fault(
        "C3",
        "Leader worker SIGKILLed, cluster layout",
        "`kill -9` of the worker holding the stream, of two, while events flow; `up` once the "
        "other has taken the stream and the raw partitions over and caught up",
    ),
    Fault(
        "C4",
        "A third worker joins, cluster layout",
        "`up` with `APP_WORKERS=3` while events flow: the raw partitions move, one to each worker",
    ),
    Fault(
        "C5",
        "Spark master SIGKILLed, cluster layout",
        "`kill -9` of the standalone master while events flow; `up` once the pipeline has caught "
        "up without it",
    ),
    Fault(
        "C6",
        "Rolling restart of the three brokers, cluster layout",
        "each broker in turn stopped (SIGTERM) and started again by `up`, the next one once no "
        "partition is under-replicated, while events flow at a twentieth of the pace",
    ),
)
FAULTS_BY_ID = {fault.id: fault for fault in FAULTS}


def results_path(default_dir: Path) -> Path:
    configured = os.environ.get(RESULTS_VARIABLE)
    return Path(configured) if configured else default_dir / RESULTS_NAME


class Results:
    """The run's figures, written to ``path`` after each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = datetime.now(UTC)
        self.entries: list[dict[str, Any]] = []
        self.suite_seconds: float | None = None  # the package: its stack, start to end
        self.stack_seconds: float | None = None  # `up` and a first run through every hop

    def add(self, entry: dict[str, Any]) -> None:
        if entry["fault"] not in FAULTS_BY_ID:
            raise ValueError(f"unknown fault {entry['fault']!r}: add it to FAULTS")
        self.entries.append(entry)
        self.write()

    def finish(self, seconds: float) -> None:
        self.suite_seconds = round(seconds, 1)
        self.write()

    def document(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started.isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "system": f"{platform.system()} {platform.machine()}",
            },
            "suite_seconds": self.suite_seconds,
            "stack_seconds": self.stack_seconds,
            "faults": self.entries,
        }

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.document(), indent=2, default=str) + "\n")
        temporary.replace(self.path)


class Figures(dict[str, Any]):
    """What one test measured about one fault (a dict: the standard figures), plus ``details``:
    figures particular to that fault (each a short label and a value)."""

    STANDARD = (
        "events_in",
        "typed_out",
        "lost",
        "doubled",
        "dead_lettered",
        "recovery_seconds",
    )

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault
        self.details: dict[str, Any] = {}

    def detail(self, label: str, value: Any) -> None:
        self.details[label] = value
