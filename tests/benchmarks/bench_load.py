"""Load: the highest rate (events/s) the whole pipeline sustains, every event counted.

    .venv/bin/python tests/benchmarks/bench_load.py [--rate R] [--minutes 10]
        [--start-rate 6000] [--probe-minutes 2] [--confirmations 3] [--every 3]
        [--config VARIABLE=VALUE]
        [--smoke] [--reuse-services | --cluster] [--json FILE]

The replay server serves the synthetic stream (infra/replay/synthetic.py) at a fixed rate to
the real worker (SSE -> raw -> typed, in Kafka transactions), whose typed topic the real Spark
job aggregates into PostgreSQL, with the default configuration except two things, so that every
served event is one valid change: the stream's repeated events and canaries are off
(``--duplicate-rate=0 --canary-every=0``) and the worker keeps every namespace
(``INGESTION_WIKIMEDIA_FILTERS_NAMESPACES=[]``, the default keeps namespace 0 only, which would
leave ~56% of the events out of the typed topic and of the aggregates).

1. **Search** (without ``--rate``): short probes (``--probe-minutes``) from ``--start-rate``,
   up by 25% while the rate holds, down by 20% until it does, then halving the bracket until it
   is within 8%. A rate **holds** when each of three lags is flat over the last half of the run:
   its least-squares slope times that half's duration is within one trigger's worth of events
   (rate × ``spark.trigger.processing_time``). A probe is held to the slope the confirmation
   run would allow (slope × half of ``--minutes``), with the Spark job's lag taken at its
   troughs (its minimum over the trigger before each sample: over a probe's few triggers the
   sawtooth of its batches would swamp the slope). The lags, sampled every ``--every`` s:

   - *ingest*: events the replay server was due to have sent by then (rate × time since the
     first event was received) minus the raw topic's end offset: the SSE side falling behind;
   - *normalizer*: the raw topic's end minus the normalizer group's committed offsets;
   - *spark*: the typed topic's end (read_committed) minus the Spark checkpoint's offsets
     (infra/lag.py; offsets include transaction markers).

2. **Confirmation** at the rate found (or at ``--rate``) for ``--minutes``: the same verdict.
   A rate that holds for a probe's two minutes does not always hold for ten: a confirmation
   that does not hold is run again ``STEP_DOWN`` lower, up to ``--confirmations`` runs in all,
   so the figure published is a rate that held for the whole run (the runs that did not are
   reported beside it). After each run, once the replay server has sent its last event (it
   serves exactly rate × duration),
   the pipeline drains and **every event is counted**: the typed topic is read whole
   (read_committed) and each served ``meta.id`` must be there once (distinct ids and total
   against the number served; ids regenerated from the stream's seed for a sample of positions
   must all be there), and the sum of ``wiki_activity.events`` must equal the number served.

3. **Where the time goes**: CPU of each process tree (``/proc/PID/stat`` utime + stime, and those
   of exited children) over the serving period, as % of one core, and RSS at its start and end:
   replay server, worker, Kafka broker, Spark driver JVM, the driver's Python, PostgreSQL, and
   this script (its lag sampling).

Without ``--reuse-services`` it starts its own Kafka and PostgreSQL (a temporary home on free
ports) and removes them after. With it, it uses the running ones that the configuration names
(``WIKIPULSE_HOME``, ``KAFKA_BOOTSTRAP_SERVERS``, ``POSTGRES_*``). Either way each run has its own
topics, database, Spark checkpoint and worker (a home of its own), removed after the run.
``--cluster``: the cluster layout (``up --cluster``): three brokers (every topic on three
replicas), the job on a Spark standalone master and two workers, two workers in one group; the
Spark cluster's CPU is reported beside the rest.
``--smoke``: one 15 s run at 300 events/s with a 5 s trigger, no search, still counting exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import math
import os
import shutil
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from psycopg2 import sql  # noqa: E402

from app.config import Settings, load_settings  # noqa: E402
from app.config.clients import aiokafka_options, libpq_params  # noqa: E402
from app.contract import HEADER_RECEIVED_AT  # noqa: E402
from infra.home import Home  # noqa: E402
from infra.lag import NORMALIZER, SPARK, consumer_lag  # noqa: E402
from infra.migrations import migrate  # noqa: E402
from infra.replay.synthetic import StreamOptions, SyntheticStream  # noqa: E402
from infra.replay_server import LocalReplay, ReplayMode  # noqa: E402
from infra.spark_cluster import LocalSparkCluster  # noqa: E402
from infra.spark_job import LocalSparkJob  # noqa: E402
from infra.stack import Stack  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from infra.worker import LocalWorker  # noqa: E402
from tests.benchmarks.method import Goal, Report, add_arguments  # noqa: E402
from tests.benchmarks.services import services  # noqa: E402
from tests.conftest import make_home  # noqa: E402
from tests.harness import consecutive_free_ports  # noqa: E402

GOAL_RATE = 12_000
STEP_UP, STEP_DOWN, RESOLUTION = 1.25, 0.8, 1.08
LAGS = ("ingest", NORMALIZER, SPARK)
#: The process trees whose CPU and memory are reported, in the order printed.
PROCESSES = (
    ("replay", "the replay server"),
    ("worker", "the worker(s)"),
    ("kafka", "the Kafka broker(s)"),
    ("spark_jvm", "the Spark driver JVM"),
    ("spark_python", "the Spark driver's Python"),
    ("spark_cluster", "the Spark master, workers, executors"),  # --cluster only
    ("postgres", "PostgreSQL"),
    ("bench", "this script"),
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def say(text: str) -> None:
    print(text, flush=True)


# ---- processes: CPU and memory from /proc ------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    ticks: int  # utime + stime
    reaped: int  # cutime + cstime: of the children it has waited for
    rss: int  # bytes


def processes() -> dict[int, Proc]:
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(stat.parent.name)
        ticks, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        found[pid] = Proc(pid, int(fields[1]), comm, ticks, reaped, int(fields[21]) * PAGE_SIZE)
    return found


def tree(procs: dict[int, Proc], root: int | None) -> list[Proc]:
    if root is None or root not in procs:
        return []
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(procs[pid])
        todo.extend(children.get(pid, []))
    return found


def reported(sample: Sample) -> list[tuple[str, str]]:
    """The parts of PROCESSES this run has (the Spark cluster only in the cluster layout)."""
    return [(key, name) for key, name in PROCESSES if key in sample.usage]


def usage(roots: dict[str, tuple[int | None, ...]]) -> dict[str, tuple[int, int]]:
    """Per reported process: (CPU ticks, RSS bytes) of its tree (processes that exited count
    in their parent's reaped ticks). The Spark job's tree is split into the driver JVM and the
    Python process the JVM runs the job in. This script is counted alone: the components it
    spawned are its children."""
    procs = processes()

    def total(members: list[Proc]) -> tuple[int, int]:
        return sum(p.ticks + p.reaped for p in members), sum(p.rss for p in members)

    found: dict[str, tuple[int, int]] = {}
    for key, root in roots.items():
        if key == "bench":
            own = procs[os.getpid()]
            found[key] = (own.ticks, own.rss)
            continue
        members = [member for pid in root for member in tree(procs, pid)]
        if key == "spark":
            found["spark_jvm"] = total([p for p in members if p.comm == "java"])
            found["spark_python"] = total([p for p in members if p.comm != "java"])
        else:
            found[key] = total(members)
    return found


# ---- the services, and one run's own state ------------------------------------------------------


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """``os.environ`` set to ``variables``: the components spawn with the caller's environment."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Pipeline:
    """The replay server, worker and Spark job of one run, in a home of their own, on topics
    and a database of their own."""

    stack: Stack
    settings: Settings
    home: Home = field(init=False)
    replay: LocalReplay = field(init=False)
    worker: LocalWorker = field(init=False)
    spark_cluster: LocalSparkCluster = field(init=False)
    spark: LocalSparkJob = field(init=False)

    def __post_init__(self) -> None:
        self.home = Home(self.settings.home)
        self.replay = LocalReplay(self.settings, self.home)
        self.worker = LocalWorker(self.settings, self.home)
        self.spark_cluster = LocalSparkCluster(self.settings, self.home)
        self.spark = LocalSparkJob(self.settings, self.home)

    @classmethod
    @contextlib.contextmanager
    def of(
        cls, stack: Stack, environ: dict[str, str], overrides: dict[str, str]
    ) -> Iterator[Pipeline]:
        suffix = uuid.uuid4().hex[:8]
        home = make_home("wikipulse-load-run-")
        # The connector jars are the services' (no second Maven fetch).
        (home / "jars").symlink_to(stack.home.jars, target_is_directory=True)
        database = f"load_{suffix}"
        variables = {
            **environ,
            "WIKIPULSE_HOME": str(home),
            "KAFKA_TOPICS_RAW_NAME": f"load-{suffix}.raw",
            "KAFKA_TOPICS_TYPED_NAME": f"load-{suffix}.v1",
            "KAFKA_TOPICS_DEAD_LETTER_NAME": f"load-{suffix}.dead-letter",
            "APP_ID": f"load-{suffix}",
            # Worker N listens on the port + N - 1 (the cluster layout runs two).
            "APP_WEB_PORT": str(consecutive_free_ports(2)),
            "POSTGRES_DATABASE": database,
            "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[]",
            **overrides,
        }
        settings = load_settings(environ=variables)
        with stack.postgres.admin() as cursor:
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(settings.postgres.user)
                )
            )
        pipeline = cls(stack, settings)
        try:
            migrate(settings)
            ensure_topics(settings)
            with environment(variables):
                yield pipeline
        finally:
            pipeline.stop()
            with stack.postgres.admin() as cursor:
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )
            asyncio.run(delete_topics(settings, suffix))
            shutil.rmtree(home, ignore_errors=True)

    def start(self, mode: ReplayMode) -> ReplayMode:
        """The Spark job first (its start-up is no part of the run), then the replay server,
        then the worker, which connects and starts the stream; the mode served (its port). In
        the cluster layout the Spark master and workers start before the job."""
        if self.spark_cluster.applies:
            self.spark_cluster.start()
        self.spark.start()
        mode = self.replay.serve(mode, say)
        self.worker.start(replay=mode)
        return mode

    def stop(self) -> None:
        for component in (self.worker, self.spark, self.spark_cluster, self.replay):
            if component is not self.spark_cluster or self.spark_cluster.applies:
                component.stop()

    def roots(self) -> dict[str, tuple[int | None, ...]]:
        """The processes of each reported part (several in the cluster layout)."""
        roots = {
            "replay": (self.replay.pid(),),
            "worker": tuple(worker.pid() for worker in self.worker.processes),
            "kafka": tuple(node.pid() for node in self.stack.kafka.nodes),
            "spark": (self.spark.pid(),),
            "postgres": (self.stack.postgres.pid(),),
            "bench": (os.getpid(),),
        }
        if self.spark_cluster.applies:
            roots["spark_cluster"] = tuple(d.pid() for d in self.spark_cluster.daemons)
        return roots

    def down(self) -> list[str]:
        """The pipeline's processes that are not running."""
        return [c.name for c in (self.replay, self.worker, self.spark) if c.pid() is None]


async def delete_topics(settings: Settings, suffix: str) -> None:
    """The run's topics: its three, and the worker's own (dedup changelog, Faust's)."""
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        ours = [name for name in await admin.list_topics() if suffix in name]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


# ---- one run -------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # epoch seconds
    lags: dict[str, float]
    raw_end: int
    usage: dict[str, tuple[int, int]]


@dataclass
class Verdict:
    """Whether each lag stayed flat over the last half of the serving period."""

    rate: float
    seconds: float
    horizon: float  # the slope is judged over this many seconds
    bound: float  # one trigger's worth of events
    growth: dict[str, float]  # slope × horizon, per lag
    slope: dict[str, float]  # events/s, per lag
    down: list[str]  # processes that died

    @property
    def held(self) -> bool:
        return not self.down and all(g <= self.bound for g in self.growth.values())

    def line(self) -> str:
        growth = ", ".join(f"{name} {self.growth[name]:+,.0f}" for name in LAGS)
        dead = f"; DOWN: {', '.join(self.down)}" if self.down else ""
        verdict = "holds" if self.held else "does NOT hold"
        return (
            f"{self.rate:,.0f} events/s {verdict}: lag trend × {self.horizon:,.0f} s {growth} "
            f"(bound {self.bound:,.0f}){dead}"
        )


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) points."""
    if len(points) < 3:
        return math.nan
    t = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points])
    return float(np.polyfit(t - t[0], v, 1)[0])


@dataclass
class Run:
    rate: float
    seconds: float
    samples: list[Sample]
    started: float  # epoch seconds: the first event received
    events: int  # served
    verdict: Verdict
    pipeline: Pipeline
    mode: ReplayMode


def first_received(settings: Settings) -> float | None:
    """Receive time (epoch s) of the raw topic's first record, or None before there is one."""

    async def read() -> float | None:
        consumer = AIOKafkaConsumer(**aiokafka_options(settings.kafka), enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(settings.kafka.topics.raw.name, 0)
            consumer.assign([tp])
            if (await consumer.end_offsets([tp]))[tp] == 0:
                return None
            await consumer.seek_to_beginning(tp)
            batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
            for record in batch.get(tp, []):
                headers = dict(record.headers)
                return int(headers[HEADER_RECEIVED_AT]) / 1000
            return None
        finally:
            await consumer.stop()

    return asyncio.run(read())


def serve(
    pipeline: Pipeline,
    rate: float,
    seconds: float,
    every: float,
    label: str,
    *,
    horizon: float,
    troughs: bool,
) -> Run:
    """Serve rate × seconds events; sample until the serving period is over; the verdict on
    the slope of each lag over the last half, times ``horizon`` seconds. ``troughs``: the
    Spark job's lag is taken at its troughs (its minimum over the trigger before each sample):
    over a probe's few triggers its sawtooth would swamp the slope."""
    events = round(rate * seconds)
    options = (
        f"--rate={rate:g}",
        f"--event-rate={rate:g}",  # event time runs at the wall clock's pace
        f"--events={events}",
        "--duplicate-rate=0",
        "--canary-every=0",
    )
    mode = ReplayMode.synthetic(options=options)
    say(f"\n{label}: {rate:,.0f} events/s for {seconds:,.0f} s ({events:,} events); starting the "
        f"Spark job, the replay server and the worker …")  # fmt: skip
    mode = pipeline.start(mode)
    settings = pipeline.settings
    deadline = time.time() + 120
    started = None
    while started is None:
        if time.time() > deadline:
            raise RuntimeError("no event reached the raw topic within 2 minutes")
        time.sleep(0.5)
        started = first_received(settings)
    say(f"{'t (s)':>6} {'raw':>11} {'ingest lag':>11} {'norm lag':>10} {'spark lag':>10}")
    samples: list[Sample] = []
    end = started + seconds
    while True:
        now = time.time()
        lags = {lag.consumer: lag for lag in consumer_lag(settings)}
        roots = pipeline.roots()
        sample_usage = usage(roots)
        t = (now + time.time()) / 2
        raw_end = sum(p.end for p in lags[NORMALIZER].partitions)
        due = min(events, rate * (t - started))
        values = {
            "ingest": max(0.0, due - raw_end) if lags[NORMALIZER].known else math.nan,
            NORMALIZER: lags[NORMALIZER].total if lags[NORMALIZER].known else math.nan,
            SPARK: lags[SPARK].total if lags[SPARK].known else math.nan,
        }
        samples.append(Sample(t, values, raw_end, sample_usage))
        say(f"{t - started:>6.0f} {raw_end:>11,} {values['ingest']:>11,.0f} "
            f"{values[NORMALIZER]:>10,.0f} {values[SPARK]:>10,.0f}")  # fmt: skip
        if t >= end:
            break
        time.sleep(max(0.0, min(every - (time.time() - now), end - time.time())))
    trigger = settings.spark.trigger.processing_time.total_seconds()
    series = {name: [(s.t, s.lags[name]) for s in samples] for name in LAGS}
    if troughs:
        series[SPARK] = [
            (t, min(v for u, v in series[SPARK] if t - trigger <= u <= t)) for t, _ in series[SPARK]
        ]
    slopes = {
        name: slope([(t, v) for t, v in points if t >= started + seconds / 2 and not math.isnan(v)])
        for name, points in series.items()
    }
    verdict = Verdict(
        rate=rate,
        seconds=seconds,
        horizon=horizon,
        bound=rate * trigger,
        growth={name: value * horizon for name, value in slopes.items()},
        slope=slopes,
        down=pipeline.down(),
    )
    say(verdict.line())
    return Run(rate, seconds, samples, started, events, verdict, pipeline, mode)


# ---- counting every event --------------------------------------------------------------------


@dataclass
class Count:
    served: int
    typed_total: int
    typed_distinct: int
    sample: int  # served ids checked one by one
    sample_missing: int
    aggregated: int  # sum of wiki_activity.events
    dead_letters: int
    drained_after: float | None  # seconds after the serving period; None: never drained

    @property
    def lost(self) -> int:
        return max(0, self.served - self.typed_distinct)

    @property
    def doubled(self) -> int:
        return self.typed_total - self.typed_distinct


def drain(run: Run, timeout: float) -> float | None:
    """Wait until every served event is in the raw topic and both readers have caught up;
    seconds it took after the serving period, None when it did not within ``timeout``."""
    settings = run.pipeline.settings
    end = run.started + run.seconds
    deadline = time.time() + timeout
    while time.time() < deadline:
        lags = {lag.consumer: lag for lag in consumer_lag(settings)}
        if all(lag.known for lag in lags.values()):
            raw_end = sum(p.end for p in lags[NORMALIZER].partitions)
            if raw_end >= run.events and lags[NORMALIZER].total == 0 and lags[SPARK].total == 0:
                return max(0.0, time.time() - end)
        time.sleep(1)
    return None


async def typed_ids(settings: Settings) -> tuple[int, np.ndarray]:
    """(records, their event ids as 16-byte values) of the whole typed topic, read_committed."""
    topic = settings.kafka.topics.typed
    consumer = AIOKafkaConsumer(
        **aiokafka_options(settings.kafka),
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    ids = bytearray()
    total = 0
    marker = b'"event_id":"'
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            batch = await consumer.getmany(*partitions, timeout_ms=1000, max_records=50_000)
            for records in batch.values():
                for record in records:
                    value = record.value
                    start = value.index(marker) + len(marker)
                    ids += binascii.unhexlify(value[start : start + 36].replace(b"-", b""))
                    total += 1
    finally:
        await consumer.stop()
    return total, np.frombuffer(bytes(ids), dtype="S16")


def dead_letters(settings: Settings) -> int:
    async def read() -> int:
        consumer = AIOKafkaConsumer(
            **aiokafka_options(settings.kafka), isolation_level="read_committed"
        )
        await consumer.start()
        try:
            name = settings.kafka.topics.dead_letter.name
            tps = [
                TopicPartition(name, p) for p in range(settings.kafka.topics.dead_letter.partitions)
            ]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    return asyncio.run(read())


def query(settings: Settings, statement: str) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement)
            return list(cursor.fetchall())
    finally:
        connection.close()


def served_ids(mode: ReplayMode, rate: float, positions: list[int]) -> np.ndarray:
    """The ``meta.id`` the replay server sent at ``positions``: the stream is a pure function of
    its options (the same ones as ``python -m infra.replay serve`` builds from the mode)."""
    stream = SyntheticStream(
        StreamOptions(
            seed=mode.seed or 0,
            rate=rate,
            start=mode.origin,
            duplicate_rate=0.0,
            canary_interval=None,
        )
    )
    return np.array([uuid.UUID(stream.label(p).event_id).bytes for p in positions], dtype="S16")


def count(run: Run, timeout: float) -> Count:
    settings = run.pipeline.settings
    say("\nserving done; waiting for the pipeline to drain …")
    drained = drain(run, timeout)
    say("drained" if drained is not None else f"NOT drained after {timeout:.0f} s; counting anyway")
    say("reading the whole typed topic …")
    started = time.perf_counter()
    total, ids = asyncio.run(typed_ids(settings))
    distinct = np.unique(ids)
    say(f"  {total:,} records, {len(distinct):,} distinct ids "
        f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    step = max(1, run.events // 4000)
    positions = sorted({*range(0, run.events, step), *range(max(0, run.events - 50), run.events)})
    expected = served_ids(run.mode, run.rate, positions)
    found = np.isin(expected, distinct)
    aggregated = query(settings, "SELECT coalesce(sum(events), 0) FROM wiki_activity")[0][0]
    return Count(
        served=run.events,
        typed_total=total,
        typed_distinct=len(distinct),
        sample=len(positions),
        sample_missing=int((~found).sum()),
        aggregated=int(aggregated),
        dead_letters=dead_letters(settings),
        drained_after=drained,
    )


# ---- the search and the report -----------------------------------------------------------------


@dataclass
class Measured:
    run: Run
    count: Count | None
    batch_ms: list[int]


def measure(
    stack: Stack,
    environ: dict[str, str],
    rate: float,
    seconds: float,
    args: argparse.Namespace,
    *,
    label: str,
    counted: bool,
) -> Measured:
    """One run on a fresh pipeline: serve, sample, and (``counted``) drain and count."""
    overrides = dict(args.config)
    if args.smoke:
        overrides["SPARK_TRIGGER_PROCESSING_TIME"] = "5 seconds"
    with Pipeline.of(stack, environ, overrides) as pipeline:
        # A probe is judged by the slope the confirmation run would allow.
        horizon = seconds / 2 if counted else args.minutes * 60 / 2
        run = serve(
            pipeline, rate, seconds, args.every, label, horizon=horizon, troughs=not counted
        )
        counts = count(run, timeout=max(300.0, seconds)) if counted else None
        rows = query(pipeline.settings, "SELECT duration_ms FROM pipeline_batches"
                     " WHERE duration_ms IS NOT NULL ORDER BY batch_id")  # fmt: skip
        batch_ms = [int(row[0]) for row in rows]
    say(f"stopped the run's processes; Spark batches took {describe_batches(batch_ms)}")
    return Measured(run, counts, batch_ms)


def describe_batches(batch_ms: list[int]) -> str:
    if not batch_ms:
        return "(no batch)"
    return (
        f"median {statistics.median(batch_ms) / 1000:.1f} s, max {max(batch_ms) / 1000:.1f} s "
        f"over {len(batch_ms)} batches"
    )


def search(
    stack: Stack, environ: dict[str, str], args: argparse.Namespace
) -> tuple[float | None, list[Verdict]]:
    """The highest rate that holds in a short probe: up by STEP_UP while it holds (down by
    STEP_DOWN until it does), then bisect the bracket to within RESOLUTION."""
    tried: list[Verdict] = []

    def holds(rate: float) -> bool:
        label = f"probe {len(tried) + 1}"
        measured = measure(
            stack, environ, rate, args.probe_minutes * 60, args, label=label, counted=False
        )
        tried.append(measured.run.verdict)
        return measured.run.verdict.held

    def rounded(rate: float) -> float:
        return float(max(100, round(rate, -2)))

    low: float | None = None
    high: float | None = None
    rate = rounded(args.start_rate)
    if holds(rate):
        low = rate
        while high is None and rounded(low * STEP_UP) <= args.max_rate:
            rate = rounded(low * STEP_UP)
            low, high = (rate, None) if holds(rate) else (low, rate)
    else:
        high = rate
        while low is None and high > 100:
            rate = rounded(high * STEP_DOWN)
            low, high = (rate, high) if holds(rate) else (None, rate)
    while low is not None and high is not None and high / low > RESOLUTION:
        rate = rounded((low * high) ** 0.5)
        if rate in (low, high):
            break
        low, high = (rate, high) if holds(rate) else (low, rate)
    return low, tried


def mib(value: float) -> float:
    return value / 2**20


def report_run(
    report: Report, measured: Measured, probes: list[Verdict], failed: list[Verdict]
) -> None:
    """``failed``: the confirmation runs before ``measured`` that did not hold."""
    run, counts = measured.run, measured.count
    verdict = run.verdict
    minutes = run.seconds / 60
    tried = [
        {"rate": v.rate, "held": v.held, "lag_growth": v.growth, "bound": v.bound}
        for v in (*probes, *failed)
    ]
    if failed:
        say("confirmations that did not hold:\n" + "\n".join(f"  {v.line()}" for v in failed))
    what = f"sustained rate, the whole pipeline, {minutes:g} min, every event counted"
    if verdict.held:
        report.add("load.sustained_rate", what, run.rate, "events/s", goal=Goal(GOAL_RATE),
                   served=run.events, minutes=minutes, probes=tried)  # fmt: skip
    else:
        report.add("load.sustained_rate", what, None, "events/s", goal=Goal(GOAL_RATE),
                   note=f"not sustained at {run.rate:,.0f} events/s: {verdict.line()}",
                   served=run.events, minutes=minutes, probes=tried)  # fmt: skip
    for name in LAGS:
        report.add(
            f"load.lag_growth.{name}",
            f"{name} lag growth over the last half (slope × {verdict.horizon:,.0f} s)",
            verdict.growth[name], "events", goal=Goal(verdict.bound, at_least=False),
            slope_per_s=verdict.slope[name],
            max=max(s.lags[name] for s in run.samples),
        )  # fmt: skip
    if counts is None:
        return
    drained = counts.drained_after
    count_detail = {
        "served": counts.served, "typed_records": counts.typed_total,
        "typed_distinct_ids": counts.typed_distinct, "sampled_ids": counts.sample,
        "sampled_ids_missing": counts.sample_missing, "dead_letters": counts.dead_letters,
        "wiki_activity_events": counts.aggregated, "drained_after_s": drained,
    }  # fmt: skip
    lost_note = "" if drained is not None else "the pipeline did not drain in time"
    report.add("load.lost", "served events missing from the typed topic", counts.lost,
               "events", goal=Goal(0, at_least=False), note=lost_note, **count_detail)  # fmt: skip
    report.add("load.doubled", "served events more than once in the typed topic",
               counts.doubled, "events", goal=Goal(0, at_least=False))  # fmt: skip
    report.add("load.aggregated_difference", "|sum of wiki_activity.events - served|",
               abs(counts.aggregated - counts.served), "events",
               goal=Goal(0, at_least=False))  # fmt: skip
    report.add("load.drain_seconds", "drained after the last event was due",
               drained, "s", note="" if drained is not None else "did not drain")  # fmt: skip
    batch_ms = measured.batch_ms
    report.add(
        "load.spark_batch_seconds", "Spark micro-batch duration, median",
        statistics.median(batch_ms) / 1000 if batch_ms else None, "s",
        note="" if batch_ms else "no batch recorded", max_s=max(batch_ms, default=0) / 1000,
        batches=len(batch_ms),
    )  # fmt: skip
    first, last = run.samples[0], run.samples[-1]
    elapsed = last.t - first.t
    ingested = last.raw_end - first.raw_end
    report.add("load.ingested_rate", "ingested into the raw topic while serving, mean",
               ingested / elapsed, "events/s", seconds=elapsed)  # fmt: skip
    total = 0.0
    for key, name in reported(first):
        seconds = (last.usage[key][0] - first.usage[key][0]) / CLOCK_TICKS
        total += 100 * seconds / elapsed
        report.add(f"load.cpu.{key}", f"CPU of {name}", 100 * seconds / elapsed,
                   "% of a core", us_per_event=1e6 * seconds / max(1, ingested),
                   rss_start_mib=mib(first.usage[key][1]),
                   rss_end_mib=mib(last.usage[key][1]))  # fmt: skip
    report.add("load.cpu.total", "CPU of all of them", total, "% of a core",
               cores=os.cpu_count())  # fmt: skip
    for key, name in reported(first):
        report.add(f"load.rss.{key}", f"RSS of {name} at the end", mib(last.usage[key][1]),
                   "MiB", start_mib=mib(first.usage[key][1]))  # fmt: skip


def variable(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.isupper():
        raise argparse.ArgumentTypeError(f"expected VARIABLE=VALUE, not {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, help="run at this rate (events/s): no search")
    parser.add_argument("--minutes", type=float, default=10.0, help="the confirmation run")
    parser.add_argument("--start-rate", type=float, default=6000.0, help="the first probe")
    parser.add_argument("--max-rate", type=float, default=30000.0, help="the search's ceiling")
    parser.add_argument("--probe-minutes", type=float, default=2.0, help="each probe")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between samples")
    parser.add_argument(
        "--confirmations", type=int, default=3, help="runs at most, each STEP_DOWN lower"
    )
    parser.add_argument(
        "--config", type=variable, action="append", default=[], metavar="VARIABLE=VALUE",
        help="configuration of the run's processes, e.g. KAFKA_PRODUCER_BATCH_SIZE=16384 "
        "(repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster layout: three brokers, the Spark cluster, two workers",
    )
    parser.add_argument(
        "--reuse-services",
        action="store_true",
        help="use the running Kafka and PostgreSQL that the configuration names",
    )
    add_arguments(parser)
    args = parser.parse_args()
    report = Report("bench_load", smoke=args.smoke)
    # A SIGTERM (a test's timeout) must still stop what was started: the processes run in
    # sessions of their own and would outlive this one.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with services(args.reuse_services, "wikipulse-load-", cluster=args.cluster) as (
        stack,
        environ,
    ):
        probes: list[Verdict] = []
        if args.smoke:
            rate, seconds, args.every = 300.0, 15.0, 2.0
        elif args.rate is not None:
            rate, seconds = args.rate, args.minutes * 60
        else:
            found, probes = search(stack, environ, args)
            say("\nprobes:\n" + "\n".join(f"  {v.line()}" for v in probes))
            if found is None:
                report.add("load.sustained_rate", "sustained rate, the whole pipeline", None,
                           "events/s", goal=Goal(GOAL_RATE), note="no probe held")  # fmt: skip
                report.finish(args.json)
                return
            rate, seconds = found, args.minutes * 60
        attempts = 1 if args.smoke else args.confirmations
        runs = confirm(
            lambda at, n: measure(
                stack, environ, at, seconds, args, label=f"confirmation {n}", counted=True
            ),
            rate,
            attempts,
        )
    measured = runs[-1]
    print_usage(measured.run)
    report_run(report, measured, probes, [run.run.verdict for run in runs[:-1]])
    report.finish(args.json)


def confirm(run_at: Callable[[float, int], Measured], rate: float, attempts: int) -> list[Measured]:
    """Confirmation runs from ``rate`` down: each one that does not hold is followed by one at
    ``STEP_DOWN`` of its rate, until one holds or ``attempts`` runs were made. Every run, in
    order; the last is the answer (held, or the lowest tried)."""
    runs = [run_at(rate, 1)]
    while not runs[-1].run.verdict.held and len(runs) < attempts:
        rate = float(max(100, round(runs[-1].run.rate * STEP_DOWN, -2)))
        say(f"\nnot sustained for the whole run: confirming again at {rate:,.0f} events/s")
        runs.append(run_at(rate, len(runs) + 1))
    return runs


def print_usage(run: Run) -> None:
    first, last = run.samples[0], run.samples[-1]
    elapsed = last.t - first.t
    ingested = max(1, last.raw_end - first.raw_end)
    say(f"\nwhere the time goes over {elapsed:,.0f} s at {run.rate:,.0f} events/s "
        f"({ingested / elapsed:,.0f} events/s ingested; {os.cpu_count()} cores):")  # fmt: skip
    for key, name in reported(first):
        seconds = (last.usage[key][0] - first.usage[key][0]) / CLOCK_TICKS
        start, end = mib(first.usage[key][1]), mib(last.usage[key][1])
        say(f"  {name:<26} {100 * seconds / elapsed:>5.0f}% of a core "
            f"{1e6 * seconds / ingested:>6.1f} µs per event ingested   "
            f"RSS {start:>6,.0f} -> {end:>6,.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
