"""End-to-end freshness: from the replay server's sending of each event to the moment its window
row in PostgreSQL includes it, through the real worker and Spark job.

    .venv/bin/python tests/benchmarks/bench_freshness.py [--seconds 150] [--rate 50]
        [--poll 0.1] [--deadline S] [--reuse-services] [--smoke] [--json FILE]

The pipeline runs as ``./infra/wikipulse up --replay`` runs it (tests/benchmarks/live_stack.py):
the replay server sends the synthetic stream at a live pace (``--rate`` events/s), the worker
ingests and normalizes it with its default configuration (namespace 0 only), the Spark job
aggregates it into PostgreSQL. Measured with a 1 s trigger (``SPARK_TRIGGER_PROCESSING_TIME``),
then with the default 30 s one (the job restarted from its checkpoint; at smoke size only 1 s).

- **Send times.** The synthetic stream is a pure function of (seed, start, rate, position), and a
  live replay server sends each event when its time comes, never before: the script computes
  that schedule (``SyntheticStream.time``) and checks it with a client of its own on the same
  replay server, which compares each event's bytes with the stream's and its arrival with its
  due time (printed: the server's lateness). Counted from the due time, freshness can only come
  out longer than from the actual sending.
- **Visibility.** A poller reads ``wiki_activity`` every ``--poll`` seconds. When the row of
  (window, wiki) first shows count k, the first k events of that window and wiki (in the order
  they were sent: the job commits prefixes of the stream) are visible, as of the moment that
  query started.
- **Which events.** Every event the replay server sent during ``--seconds`` from the moment the
  Spark job committed its first batch (of the stack, or of the job restarted with the 30 s
  trigger), that the pipeline counts: changes that pass the worker's filters, not canaries nor
  repeats of an earlier ``meta.id``. Events sent before, while the stack started (its first
  batch also warms the JVM up), are not measured: their count is in the figures' note.
- **Missing.** An event not visible within ``--deadline`` seconds of its sending is missing: a
  failure, counted as infinitely late in the percentiles (a percentile that falls on one is not
  a number, and is reported as such).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import math
import socket
import statistics
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from app.config import Settings  # noqa: E402
from app.config.clients import aiokafka_options  # noqa: E402
from app.config.settings import FiltersSettings  # noqa: E402
from app.contract import HEADER_SSE_ID  # noqa: E402
from infra.processes import wait_for  # noqa: E402
from infra.replay.synthetic import Label, Role, StreamOptions, SyntheticStream  # noqa: E402
from infra.replay.wire import parse_last_event_id  # noqa: E402
from infra.replay_server import ReplayMode  # noqa: E402
from tests.benchmarks.live_stack import LiveStack, connect, say  # noqa: E402
from tests.benchmarks.method import Goal, Report, add_arguments, percentile  # noqa: E402

#: Each trigger measured, and its name in the figures; the goals at each.
TRIGGERS = {"1 second": "1s", "30 seconds": "30s"}
GOALS = {"1s": {"p50": 1.5, "p99": 3.0}}
#: An event's ``timestamp`` (its event time) is up to ~19 s before its ``meta.dt`` (its due time):
#: windows starting this far before the measurement may hold measured events.
EVENT_TIME_REACH = timedelta(seconds=60)

Key = tuple[datetime, str]  # (window start, wiki): a row of wiki_activity


# ---- what was sent, and when ------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    key: Key
    rank: int  # its place among the counted events of its key, in the order they were sent
    due: float  # epoch seconds: when the replay server sends it


def window_start(moment: datetime, window: timedelta) -> datetime:
    """The start of the epoch-aligned window holding ``moment``, as Spark's ``window()``."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (moment - epoch) // window * window


def event_time(data: bytes) -> datetime:
    """The typed event's event time (app.contract): ``timestamp`` when present, else
    ``meta.dt``."""
    event = orjson.loads(data)
    if isinstance(event.get("timestamp"), int):
        return datetime.fromtimestamp(event["timestamp"], UTC)
    return datetime.fromisoformat(event["meta"]["dt"])


def counted(label: Label, filters: FiltersSettings, first: int) -> bool:
    """Whether wiki_activity counts the event at ``label.position``, for a worker that received
    the stream from ``first`` on: a change that passes its filters (a repeat of an earlier
    ``meta.id`` is dropped by its dedup, unless it never received the original)."""
    fresh = label.role in (Role.CHANGE, Role.BURST) or (
        label.role is Role.DUPLICATE and label.original < first
    )
    return (
        fresh
        and (not filters.namespaces or label.namespace in filters.namespaces)
        and (not filters.wikis or label.wiki in filters.wikis)
        and (not filters.types or (label.kind is not None and label.kind.value in filters.types))
    )


def counted_events(
    stream: SyntheticStream, settings: Settings, first: int, begin: int, end: int
) -> list[Sent]:
    """The events of positions ``begin`` to ``end`` that wiki_activity counts, ranked within
    their (window, wiki) from the worker's first position ``first`` on."""
    window = settings.spark.windowing.duration
    filters = settings.ingestion.wikimedia.filters
    earliest = window_start(stream.time(begin) - EVENT_TIME_REACH, window)
    low = max(first, stream.position_at(earliest))
    ranks: dict[Key, int] = defaultdict(int)
    measured: list[Sent] = []
    for label, data in stream.labelled(end - low, first=low):
        if not counted(label, filters, first) or label.wiki is None:
            continue
        key = (window_start(event_time(data), window), label.wiki)
        ranks[key] += 1
        if label.position >= begin:
            measured.append(Sent(key, ranks[key], stream.time(label.position).timestamp()))
    return measured


async def _first_position(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(**aiokafka_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(settings.kafka.topics.raw.name, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        record = await asyncio.wait_for(consumer.getone(), timeout=120)
        resume = parse_last_event_id(dict(record.headers)[HEADER_SSE_ID].decode())
        assert isinstance(resume, int), "the replay server's ids carry positions"
        return resume - 1
    finally:
        await consumer.stop()


def first_position(settings: Settings) -> int:
    """The stream position of the first event the worker received (the raw topic's first
    record, its SSE id): a live replay starts a new client at the current position."""
    return asyncio.run(_first_position(settings))


class Probe(threading.Thread):
    """A client of the replay server beside the worker: checks that it sends the stream the
    script computes, on schedule."""

    def __init__(self, url: str, stream: SyntheticStream) -> None:
        super().__init__(daemon=True)
        self.url = urllib.parse.urlsplit(url)
        self.stream = stream
        self.lateness: list[float] = []
        self.mismatches = 0
        self.connection = http.client.HTTPConnection(self.url.hostname, self.url.port)

    def run(self) -> None:
        try:
            self.connection.request("GET", self.url.path)
            response = self.connection.getresponse()
            position, data = None, b""
            for line in response:
                arrived = time.time()
                if line.startswith(b"id: "):
                    resume = parse_last_event_id(line[4:].decode())
                    position = resume - 1 if isinstance(resume, int) else None
                elif line.startswith(b"data: "):
                    data = line[6:].rstrip(b"\n")
                elif line == b"\n" and position is not None:
                    if data != self.stream.event(position):
                        self.mismatches += 1
                    self.lateness.append(arrived - self.stream.time(position).timestamp())
                    position, data = None, b""
        except (OSError, http.client.HTTPException):
            return  # closed by stop()

    def stop(self) -> None:
        """End the stream: shut the socket down, which wakes the blocked read."""
        if self.connection.sock is not None:
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.join(timeout=10)
        self.connection.close()


# ---- what PostgreSQL shows, and when ----------------------------------------------------------


class Poller(threading.Thread):
    """Reads wiki_activity's counts every ``interval`` seconds; remembers when each count of each
    (window, wiki) was first seen (the moment its query started)."""

    def __init__(self, settings: Settings, since: datetime, interval: float) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.since = since
        self.interval = interval
        self.seen: dict[Key, list[tuple[int, float]]] = defaultdict(list)
        self.polls = 0
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        connection = connect(self.settings)
        last: dict[Key, int] = {}
        try:
            with connection.cursor() as cursor:
                while not self.stopped.is_set():
                    asked = time.time()
                    cursor.execute(
                        "SELECT window_start, wiki, events FROM wiki_activity"
                        " WHERE window_start >= %s",
                        (self.since,),
                    )
                    for start, wiki, events in cursor.fetchall():
                        key = (start, wiki)
                        if events != last.get(key):
                            last[key] = events
                            self.seen[key].append((events, asked))
                    self.polls += 1
                    self.stopped.wait(self.interval)
        except BaseException as error:  # reported by the main thread
            self.error = error
        finally:
            connection.close()

    def visible_at(self, sent: Sent) -> float | None:
        seen = list(self.seen.get(sent.key, ()))
        return next((at for count, at in seen if count >= sent.rank), None)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        if self.error is not None:
            raise RuntimeError("polling PostgreSQL failed") from self.error


# ---- one measurement ----------------------------------------------------------------------------


@dataclass
class Measurement:
    delays: list[float]  # seconds; math.inf for a missing event
    #: Counted events sent before it began, since the stack started or the previous measurement.
    unmeasured: int
    end: int  # the position after the last measured one
    polls: int
    batches: dict[str, float] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return sum(1 for delay in self.delays if math.isinf(delay))


def measure(
    live: LiveStack,
    stream: SyntheticStream,
    first: int,
    previous: int,
    *,
    seconds: float,
    poll: float,
    deadline: float,
) -> Measurement:
    """Events sent during ``seconds`` from now: when each became visible. ``previous``: the
    position where the last measurement ended (or the worker's first): what was sent since is
    not measured, only counted."""
    settings = live.settings
    trigger = settings.spark.trigger.processing_time.total_seconds()
    began = datetime.now(UTC)
    begin = stream.position_at(began)
    since = window_start(began - EVENT_TIME_REACH, settings.spark.windowing.duration)
    poller = Poller(settings, since, poll)
    poller.start()
    try:
        say(f"measuring for {seconds:g} s (trigger {trigger:g} s) …")
        time.sleep(seconds)
        end = stream.position_at(began + timedelta(seconds=seconds))
        sent = counted_events(stream, settings, first, begin, end)
        last_due = max((event.due for event in sent), default=time.time())
        while time.time() < last_due + deadline and any(
            poller.visible_at(event) is None for event in sent
        ):
            time.sleep(0.5)
    finally:
        poller.stop()
    delays = []
    for event in sent:
        seen = poller.visible_at(event)
        late = seen is None or seen - event.due > deadline
        delays.append(math.inf if late else seen - event.due)
    filters = settings.ingestion.wikimedia.filters
    unmeasured = sum(1 for label, _ in stream.labelled(begin - previous, previous)
                     if counted(label, filters, first))  # fmt: skip
    batches = batch_durations(settings, began)
    return Measurement(delays, unmeasured, end, poller.polls, batches)


def database_now(settings: Settings) -> datetime:
    connection = connect(settings)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            moment: datetime = cursor.fetchone()[0]
            return moment
    finally:
        connection.close()


def newest_batch(settings: Settings) -> datetime | None:
    """When the Spark job committed its newest batch (the database's clock), or None."""
    connection = connect(settings)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(committed_at) FROM pipeline_batches")
            moment: datetime | None = cursor.fetchone()[0]
            return moment
    finally:
        connection.close()


def wait_for_batch(settings: Settings, after: datetime | None) -> None:
    """Until the Spark job has committed a batch (after ``after``): the end of its start-up,
    whose first batch also warms the JVM up (a minute on a loaded machine)."""
    say("waiting for the Spark job's first batch …")

    def committed() -> bool:
        newest = newest_batch(settings)
        return newest is not None and (after is None or newest > after)

    if not wait_for(committed, timeout=600, interval=0.5):
        raise RuntimeError("the Spark job committed no batch within 10 minutes")


def batch_durations(settings: Settings, since: datetime) -> dict[str, float]:
    connection = connect(settings)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),"
                " max(duration_ms) FROM pipeline_batches"
                " WHERE committed_at >= %s AND input_rows > 0",
                (since,),
            )
            count, median, longest = cursor.fetchone()
    finally:
        connection.close()
    return {"batches": count, "median_ms": median or 0.0, "max_ms": longest or 0.0}


# ---- the report ---------------------------------------------------------------------------------


def add_figures(report: Report, name: str, result: Measurement | None, context: str) -> None:
    goals = GOALS.get(name, {})
    label = f"{name[:-1]} s trigger"
    if result is None:
        note = "not measured at smoke size (a 30 s trigger needs minutes)"
        for stat in ("p50", "p95", "p99", "max"):
            report.add(
                f"freshness.{name}.{stat}", f"freshness {stat}, {label}", None, "s", note=note
            )
        report.add(
            f"freshness.{name}.missing", f"events missing, {label}", None, "events", note=note
        )
        return
    delays = result.delays
    for stat, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        value = percentile(delays, fraction) if delays else math.inf
        goal = Goal(goals[stat], at_least=False) if stat in goals else None
        finite = not math.isinf(value)
        report.add(
            f"freshness.{name}.{stat}",
            f"freshness {stat}, {label}",
            value if finite else None,
            "s",
            goal=goal,
            note=(context if stat == "p50" else "")
            if finite
            else "falls on an event that never appeared (or no event measured)",
        )
    report.add(
        f"freshness.{name}.missing",
        f"events missing, {label}",
        result.missing,
        "events",
        goal=Goal(0, at_least=False) if goals else None,
        note=f"of {len(delays):,} measured; not in PostgreSQL within the deadline",
        measured=len(delays),
        unmeasured_before=result.unmeasured,
        polls=result.polls,
        **result.batches,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="measured per trigger (default 150)")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s served (default 50)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between polls")
    parser.add_argument(
        "--deadline", type=float, help="seconds after which an event is missing (30 + 2 triggers)"
    )
    parser.add_argument(
        "--reuse-services", action="store_true", help="the environment's Kafka and PostgreSQL"
    )
    add_arguments(parser)
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else 12.0 if args.smoke else 150.0
    triggers = ["1 second"] if args.smoke else list(TRIGGERS)
    report = Report("bench_freshness", smoke=args.smoke)

    mode = ReplayMode.synthetic(options=(f"--event-rate={args.rate:g}",))
    assert mode.seed is not None and mode.origin is not None
    # The server's stream: its options are the replay CLI's defaults but for seed, start, rate.
    stream = SyntheticStream(StreamOptions(seed=mode.seed, rate=args.rate, start=mode.origin))
    results: dict[str, Measurement] = {}
    with LiveStack(
        mode, reuse_services=args.reuse_services, SPARK_TRIGGER_PROCESSING_TIME=triggers[0]
    ) as live:
        first = previous = first_position(live.settings)
        probe = Probe(live.replay_url, stream)
        probe.start()
        try:
            for trigger in triggers:
                restarted = None
                if trigger != triggers[0]:
                    restarted = database_now(live.settings)
                    live.restart_spark(SPARK_TRIGGER_PROCESSING_TIME=trigger)
                wait_for_batch(live.settings, restarted)
                interval = live.settings.spark.trigger.processing_time.total_seconds()
                result = measure(
                    live, stream, first, previous,
                    seconds=seconds, poll=args.poll, deadline=args.deadline or 30 + 2 * interval,
                )  # fmt: skip
                previous = result.end
                results[TRIGGERS[trigger]] = result
                finite = [d for d in result.delays if not math.isinf(d)]
                say(
                    f"  {len(result.delays):,} events, {result.missing} missing; "
                    f"median {statistics.median(finite) if finite else math.nan:.2f} s; "
                    f"{result.batches}"
                )
        finally:
            probe.stop()
        down = live.down_components()

    if probe.mismatches or not probe.lateness:
        say(f"the replay server did not send the stream computed here ({probe.mismatches} differ)")
        return 1
    median_ms, max_ms = statistics.median(probe.lateness) * 1000, max(probe.lateness) * 1000
    lateness = (
        f"the replay server sent on schedule: a second client got events a median "
        f"{median_ms:.0f} ms, at most {max_ms:.0f} ms after their due time"
    )
    say(lateness)
    for name in TRIGGERS.values():
        result = results.get(name)
        context = ""
        if result is not None:
            context = (
                f"{args.rate:g} events/s served, {len(result.delays):,} events counted by the "
                f"pipeline in {seconds:g} s from the Spark job's first batch (of the stack, or of "
                f"the job restarted with this trigger); the {result.unmeasured:,} counted before, "
                "while it started, are not measured; "
                "missing events count as infinitely "
                f"late; polled every {args.poll:g} s; {lateness}"
            )
        add_figures(report, name, result, context)
    report.finish(args.json)
    if down:
        say(f"components down at the end: {', '.join(down)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
