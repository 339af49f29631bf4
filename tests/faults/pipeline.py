"""One running stack for the whole fault suite, and what the fault tests do with it.

The package fixture starts the stack once, as a user does (``./infra/wikipulse up --replay``
on a home and free ports of its own). Each test then starts a *run*: its own raw topic and app
id (so a fresh worker, which reads no other run's raw log and resumes from nothing), and its own
events: the same 384 synthetic events (tests/events.py) with fresh ``meta.id``s and times moved
to minutes no other run uses. The typed topic, the dead-letter topic, the Spark job (and its
checkpoint) and PostgreSQL are shared: a test checks the typed records of its own ids, the dead
letters of its own raw topic, and the aggregate rows of its own minutes, which must equal the
golden values computed in plain Python from its events (tests/spark/helpers.golden). Every run
starts with ``up``, so a test finds the stack whole even when the one before it failed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from app.config import Settings, load_settings
from infra.processes import pid_alive, wait_for
from infra.replay.wire import rewrite_event
from tests.events import synthetic
from tests.harness import cli_pids, read_topic, run_cli, worker_metrics
from tests.spark.helpers import golden, user_edit_counts, wiki_activity

#: Every run's events, before fresh_events: 384 synthetic changes (no repeats, no canaries: each
#: one valid), about ten seconds of the live stream.
SAMPLE = tuple(synthetic(384, seed=5, start=datetime(2026, 6, 15, 10, 0, tzinfo=UTC)))
#: × the event-time pace: the 384 events in about 10 s (40 events/s, like the live stream),
#: so a fault injected after the first hundred lands mid-stream.
PACE = 1.0
#: A run's first event lands this many seconds into a minute: its events straddle two windows.
FIRST_SECOND = 50
OUTCOMES = ("valid", "filtered", "duplicate", "canary", "dead_letter")


def event_epoch(line: bytes) -> int:
    """The event time the aggregates use: ``timestamp``, else ``meta.dt`` (epoch seconds)."""
    event = json.loads(line)
    if event.get("timestamp") is not None:
        return int(event["timestamp"])
    return int(datetime.fromisoformat(event["meta"]["dt"]).timestamp())


def event_id(line: bytes) -> str:
    return str(json.loads(line)["meta"]["id"])


def header(record: Any, name: str) -> bytes | None:
    return dict(record.headers).get(name)


def kill_group(pid: int) -> None:
    """SIGKILL a component ``up`` started (it leads its own process group) and wait for it."""
    os.killpg(pid, signal.SIGKILL)
    if not wait_for(lambda: not pid_alive(pid), timeout=30):
        raise AssertionError(f"pid {pid} survived SIGKILL")


def rss_mb(pids: Sequence[int]) -> float:
    """The resident memory of these processes, in MiB (0 for those that are gone)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def group_pids(pgid: int) -> list[int]:
    """Every process of the process group ``pgid`` (spark-submit's JVM and its Python)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class Run:
    """One test's pipeline: its worker (app id, raw topic) and its events."""

    name: str
    env: dict[str, str]
    settings: Settings
    events: tuple[bytes, ...]  # the good events, as served (fresh ids, moved times)
    first_window: datetime
    end_window: datetime  # exclusive
    up_output: str

    @property
    def app_id(self) -> str:
        return self.settings.app.id

    @property
    def raw_topic(self) -> str:
        return self.settings.kafka.topics.raw.name

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(event_id(line) for line in self.events)

    def expected(self) -> tuple[dict[Any, Any], dict[Any, Any]]:
        return golden(self.events, window=self.settings.spark.windowing.duration)


@dataclass(frozen=True)
class Delivery:
    """What the typed and dead-letter topics hold of a run."""

    typed_out: int  # typed records carrying one of the run's ids (copies included)
    lost: int  # run ids with no typed record
    doubled: int  # typed records beyond the first of each id
    dead_lettered: int  # dead letters from the run's raw topic
    raw_records: int
    raw_doubled: int  # raw records beyond the first of each SSE id

    @property
    def figures(self) -> dict[str, int]:
        return {
            "typed_out": self.typed_out,
            "lost": self.lost,
            "doubled": self.doubled,
            "dead_lettered": self.dead_lettered,
        }


class FaultStack:
    """The stack of ``./infra/wikipulse up`` in ``home`` (environment ``env``)."""

    def __init__(self, home: Path, env: dict[str, str], workdir: Path) -> None:
        self.home = home
        self.env = env
        self.workdir = workdir
        self.settings = load_settings(environ=env)
        self._free_minute = 0  # epoch seconds: the first minute no run has used yet

    # ---- the command ----------------------------------------------------------------------

    def cli(self, env: dict[str, str], *args: str, timeout: float = 400) -> str:
        """``./infra/wikipulse ARGS``; its output, or AssertionError when it fails."""
        result = run_cli(env, *args, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"`wikipulse {' '.join(args)}` exited with {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def up(self, run: Run, *args: str) -> str:
        return self.cli(run.env, "up", *args)

    def pids(self, run: Run) -> dict[str, int]:
        return cli_pids(self.home, run.app_id)

    def log(self, name: str, lines: int = 40) -> str:
        """The end of a component's log (``worker-<app id>``, ``spark``, ``replay``, …)."""
        path = self.home / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no {path})"

    # ---- a run ----------------------------------------------------------------------------

    def fresh_events(self, lines: Sequence[bytes]) -> list[bytes]:
        """``lines`` with fresh ``meta.id``s, moved (whole seconds) to minutes of their own,
        after every earlier run's: Spark's watermark only moves forward, so a run's events must
        never be older than the last run's."""
        stamps = [event_epoch(line) for line in lines]
        start = max(math.ceil(time.time() / 60) * 60, self._free_minute)
        shift = start + FIRST_SECOND - min(stamps)
        moved = [
            rewrite_event(line, new_id=str(uuid.uuid4()), shift=timedelta(seconds=shift))
            for line in lines
        ]
        # One empty minute between runs.
        self._free_minute = (max(stamps) + shift) // 60 * 60 + 120
        return moved

    def start(
        self,
        name: str,
        events: Sequence[bytes],
        *,
        serve: Sequence[bytes] | None = None,
        speed: float | None = None,
        options: Sequence[str] = (),
        live_url: str | None = None,
        **extra_env: str,
    ) -> Run:
        """A run: stop the previous run's worker, then ``up`` with this run's raw topic and app
        id, either ``--replay`` of ``events`` (or of their first part, ``serve``; ``--once``, at
        ``speed`` × the recorded pace, None: as fast as possible; with the replay server's fault
        ``options``) or ``--live`` on ``live_url`` (a replay server of the test's own, whose
        requests it can watch)."""
        env = {
            **self.env,
            "KAFKA_TOPICS_RAW_NAME": f"faults.{name}.raw",
            "APP_ID": f"faults-{name}",
            **extra_env,
        }
        self.cli(env, "down", "worker")
        stamps = [event_epoch(line) for line in events]
        run = Run(
            name=name,
            env=env,
            settings=load_settings(environ=env),
            events=tuple(events),
            first_window=datetime.fromtimestamp(min(stamps) // 60 * 60, UTC),
            end_window=datetime.fromtimestamp(max(stamps) // 60 * 60 + 60, UTC),
            up_output="",
        )
        if live_url is not None:
            env["INGESTION_WIKIMEDIA_URL"] = live_url
            return replace(run, up_output=self.cli(env, "up", "--live"))
        return self.serve(run, events if serve is None else serve, speed=speed, options=options)

    def serve(
        self,
        run: Run,
        events: Sequence[bytes],
        *,
        speed: float | None = None,
        options: Sequence[str] = (),
    ) -> Run:
        """``up --replay`` of ``events`` (``--once``) for the run. After an earlier part of the
        same events, the worker resumes at the next position: the rest flows. The run's
        expected values become those of ``events``."""
        path = self.workdir / f"{run.name}-{len(events)}.ndjson"
        path.write_bytes(b"".join(line + b"\n" for line in events))
        replay_options = [f"--replay-option={option}" for option in options]
        output = self.cli(
            run.env,
            "up",
            "--replay",
            str(path),
            "--once",
            "--speed",
            "max" if speed is None else f"{speed:g}",
            *replay_options,
        )
        return replace(run, events=tuple(events), up_output=output)

    # ---- what the pipeline holds ----------------------------------------------------------

    def topic(self, topic: str, partitions: int) -> list[Any]:
        return asyncio.run(read_topic(self.settings, topic, partitions))

    def raw(self, run: Run) -> list[Any]:
        raw = run.settings.kafka.topics.raw
        return self.topic(raw.name, raw.partitions)

    def dead_letters(self, run: Run) -> list[Any]:
        topic = self.settings.kafka.topics.dead_letter
        return [
            record
            for record in self.topic(topic.name, topic.partitions)
            if header(record, "origin-topic") == run.raw_topic.encode()
        ]

    def typed_ids(self) -> Counter[str]:
        """Every event id in the typed topic (read_committed), with its number of records."""
        topic = self.settings.kafka.topics.typed
        return Counter(
            json.loads(record.value)["event_id"]
            for record in self.topic(topic.name, topic.partitions)
        )

    def delivery(self, run: Run) -> Delivery:
        typed = self.typed_ids()
        ids = run.ids
        raw = self.raw(run)
        sse_ids = Counter(header(record, "sse-id") for record in raw)
        return Delivery(
            typed_out=sum(typed[i] for i in ids),
            lost=sum(1 for i in ids if typed[i] == 0),
            doubled=sum(typed[i] - 1 for i in ids if typed[i] > 1),
            dead_lettered=len(self.dead_letters(run)),
            raw_records=len(raw),
            raw_doubled=sum(n - 1 for n in sse_ids.values() if n > 1),
        )

    def raw_resume_point(self, run: Run) -> str | None:
        """The resume point the run's newest raw record carries (its sender's, when it sent it):
        where a worker taking the stream over resumes (app/ingest/resume.py)."""
        raw = self.raw(run)
        newest = max(raw, key=lambda record: record.timestamp) if raw else None
        value = header(newest, "resume-id") if newest is not None else None
        return value.decode() or None if value is not None else None

    def aggregates(self, run: Run) -> tuple[dict[Any, Any], dict[Any, Any]]:
        """The run's rows of user_edit_counts and wiki_activity (its minutes only)."""

        def mine(rows: dict[Any, Any]) -> dict[Any, Any]:
            return {k: v for k, v in rows.items() if run.first_window <= k[0] < run.end_window}

        return mine(user_edit_counts(self.settings)), mine(wiki_activity(self.settings))

    def metrics(self, run: Run) -> dict[str, float]:
        """The run's workers' /metrics, summed over its ``app.workers`` (each normalizes its
        share of the raw partitions; the leader alone receives the stream)."""
        first = int(run.env["APP_WEB_PORT"])
        total: dict[str, float] = {}
        for port in range(first, first + run.settings.app.workers):
            try:
                values = worker_metrics({**run.env, "APP_WEB_PORT": str(port)})
            except OSError:
                continue
            for name, value in values.items():
                total[name] = total.get(name, 0.0) + value
        return total

    def outcomes(self, run: Run) -> dict[str, int]:
        values = self.metrics(run)
        counts = {
            outcome: int(values.get(f'wikipulse_ingest_events_total{{outcome="{outcome}"}}', 0))
            for outcome in OUTCOMES
        }
        counts["received"] = int(values.get("wikipulse_sse_events_received_total", 0))
        return counts

    def reconnects(self, run: Run) -> dict[str, int]:
        prefix = 'wikipulse_sse_reconnects_total{reason="'
        return {
            name[len(prefix) : -2]: int(value)
            for name, value in self.metrics(run).items()
            if name.startswith(prefix) and value
        }

    # ---- waiting --------------------------------------------------------------------------

    def wait_valid(self, run: Run, count: int, timeout: float = 120) -> int:
        """Wait until the run's worker has committed ``count`` valid events; how many it had."""
        seen = 0

        def enough() -> bool:
            nonlocal seen
            seen = self.outcomes(run)["valid"]
            return seen >= count

        if not wait_for(enough, timeout=timeout, interval=0.25):
            raise AssertionError(
                f"{seen} of {count} valid events after {timeout:.0f} s; worker log:\n"
                + self.log(f"worker-{run.app_id}")
            )
        return seen

    def wait_caught_up(
        self,
        run: Run,
        since: float,
        *,
        timeout: float = 240,
        heal: Callable[[], None] | None = None,
    ) -> float:
        """Wait until the run's aggregate rows equal its golden values; the seconds from
        ``since`` (time.monotonic) until then. Fails at once when a count overshoots (a doubled
        event never goes away). ``heal`` is called on each poll (e.g. `up` when a component
        died)."""
        users, wikis = run.expected()
        deadline = time.monotonic() + timeout
        shown: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
        while True:
            try:
                shown = self.aggregates(run)
            except psycopg2.Error:
                shown = ({}, {})
            if shown == (users, wikis):
                return round(time.monotonic() - since, 1)
            over = [
                key
                for rows, expected in zip(shown, (users, wikis), strict=True)
                for key, value in rows.items()
                if key not in expected
                or any(v > e for v, e in zip(value[1:], expected[key][1:], strict=True))
            ]
            if over:
                raise AssertionError(
                    f"aggregates beyond the golden values (events counted twice?) at {over[:5]}"
                )
            if time.monotonic() > deadline:
                counted = sum(row[-1] for row in shown[1].values())
                raise AssertionError(
                    f"not caught up after {timeout:.0f} s: {counted} of {len(run.events)} events "
                    f"in wiki_activity; worker log:\n{self.log(f'worker-{run.app_id}')}\n"
                    f"spark log:\n{self.log('spark')}"
                )
            if heal is not None:
                heal()
            time.sleep(0.5)


def wait_seconds(until: float) -> None:
    """Let a fault last until ``until`` (time.monotonic): fault injection, not a check."""
    time.sleep(max(0.0, until - time.monotonic()))
