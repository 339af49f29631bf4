"""Footprint: the memory of every component of ``./infra/wikipulse up --replay`` at the live pace.

    .venv/bin/python tests/benchmarks/bench_footprint.py [--minutes 10] [--rate 40]
        [--no-browser] [--reuse-services | --cluster] [--smoke] [--json FILE]

Starts the whole stack in replay mode on the synthetic stream (~40 events/s, like the live
stream) with the default configuration, opens the dashboard in one headless Chromium session
(as a user watching it; the browser itself is not counted), and after ``--minutes`` reads the
RSS and the PSS (proportional set size: memory shared between processes counted once, split
among them; ``/proc/PID/smaps_rollup``) of each component's process tree: the Kafka broker's
JVM, the Spark driver's JVM and its Python, PostgreSQL's processes, the dashboard, the worker and
the replay server; the figure is the whole stack's PSS. Goal: at most 1.5 GiB (1,536 MiB).
Memory is sampled every ``--every`` seconds on the way, to show what grows.

With ``--cluster``: the cluster layout (``up --cluster``: three brokers, a Spark master and two
workers with the job's executors, two workers), each of its processes measured on its own (the
memory per process that infra/README.md's production section quotes).

With ``--reuse-services`` Kafka and PostgreSQL are the environment's (their processes are
measured as they are: they may serve others too); the pipeline runs on a database and topics of
its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from infra.processes import wait_for  # noqa: E402
from infra.replay_server import ReplayMode  # noqa: E402
from tests.benchmarks.live_stack import LiveStack, say  # noqa: E402
from tests.benchmarks.method import Goal, Report, add_arguments  # noqa: E402

MIB = 2**20
#: The issue's "1.5 GB", read as binary units like every figure here.
GOAL_MIB = 1.5 * 1024

#: (figure key, what the figure is, component, which processes of its tree).
PARTS = (
    ("kafka", "Kafka broker (JVM)", "kafka", "all"),
    ("spark_jvm", "Spark driver (JVM)", "spark", "java"),
    ("spark_python", "Spark driver's Python (spark/job.py)", "spark", "other"),
    ("postgres", "PostgreSQL (all its processes)", "postgres", "all"),
    ("dashboard", "dashboard (Streamlit)", "dashboard", "all"),
    ("worker", "worker (Faust)", "worker", "all"),
    ("replay", "replay server", "replay", "all"),
)
EXECUTOR_CLASS = "CoarseGrainedExecutorBackend"


@dataclass(frozen=True)
class Part:
    key: str
    what: str
    pid: int | None
    which: str  # all | java | other | daemon (without its executors) | executors


def parts_of(live: LiveStack) -> list[Part]:
    """What is measured: each component's process tree, and in the cluster layout each of its
    processes (brokers, Spark daemons and the executors they launched, workers) on its own."""
    pids = live.pids()
    parts = [Part(key, what, pids.get(component), which) for key, what, component, which in PARTS]
    if not live.settings.spark.runs_local_cluster:
        return parts
    stack = live.stack
    parts[0] = Part("kafka", "Kafka broker 1 (JVM)", stack.kafka.nodes[0].pid(), "all")
    for node in stack.kafka.nodes[1:]:
        key = node.name.replace("-", "_")
        parts.append(Part(key, f"Kafka broker {node.node_id} (JVM)", node.pid(), "all"))
    parts[5] = Part("worker", "worker 1 (Faust)", stack.worker.processes[0].pid(), "all")
    for worker in stack.worker.processes[1:]:
        key = worker.name.replace("-", "_")
        parts.append(Part(key, f"worker {worker.number} (Faust)", worker.pid(), "all"))
    for daemon in stack.spark_cluster.daemons:
        key, pid = daemon.name.replace("-", "_"), daemon.pid()
        if daemon.number == 0:
            parts.append(Part(key, "Spark master (JVM)", pid, "all"))
            continue
        parts.append(Part(key, f"Spark worker {daemon.number} (daemon JVM)", pid, "daemon"))
        what = f"Spark executor on worker {daemon.number} (JVM)"
        parts.append(Part(f"executor_{daemon.number}", what, pid, "executors"))
    return parts


@dataclass
class Memory:
    rss: int = 0
    pss: int = 0
    processes: int = 0

    def add(self, process: psutil.Process) -> None:
        try:
            info = process.memory_full_info()  # rss from statm, pss from smaps_rollup
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return  # ended between the listing and the reading
        self.rss += info.rss
        self.pss += info.pss
        self.processes += 1


def tree(pid: int | None) -> list[psutil.Process]:
    """A process and its descendants (empty when it does not run)."""
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def is_java(process: psutil.Process) -> bool:
    try:
        return process.name() == "java"
    except psutil.NoSuchProcess:
        return False


def is_executor(process: psutil.Process) -> bool:
    try:
        return EXECUTOR_CLASS in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def counted(process: psutil.Process, which: str) -> bool:
    if which == "all":
        return True
    if which in ("java", "other"):
        return (which == "java") == is_java(process)
    return (which == "executors") == is_executor(process)


def measure(parts: list[Part]) -> dict[str, Memory]:
    """The memory of each part, by figure key."""
    found: dict[str, Memory] = {}
    for part in parts:
        memory = found[part.key] = Memory()
        for process in tree(part.pid):
            if counted(process, part.which):
                memory.add(process)
    return found


def total(parts: dict[str, Memory]) -> Memory:
    return Memory(
        rss=sum(m.rss for m in parts.values()),
        pss=sum(m.pss for m in parts.values()),
        processes=sum(m.processes for m in parts.values()),
    )


def open_dashboard(url: str, stack: ExitStack) -> str:
    """One headless Chromium session on the dashboard, kept open; what was done, in words."""
    from tests.dashboards.browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        return f"no browser on the dashboard ({CHROMIUM} is missing)"
    from playwright import sync_api  # a dev dependency

    playwright = stack.enter_context(sync_api.sync_playwright())
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    stack.callback(browser.close)
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    page.goto(url)
    page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
    return "one Chromium session on the dashboard"


def sample(
    live: LiveStack, minutes: float, every: float, audience: str
) -> tuple[dict[str, Memory], list[tuple[float, float]]]:
    """Sample every ``every`` seconds for ``minutes``: the last sample, and the whole stack's PSS
    (MiB) at each (seconds since the first)."""
    say(f"{audience}; sampling every {every:g} s for {minutes:g} min")
    keys = [part.key for part in parts_of(live)]
    say(f"{'t (s)':>6} " + " ".join(f"{key:>12}" for key in keys) + f" {'total PSS':>10}")
    started = time.monotonic()
    totals = []
    while True:
        parts = measure(parts_of(live))
        elapsed = time.monotonic() - started
        totals.append((round(elapsed), round(total(parts).pss / MIB)))
        say(
            f"{elapsed:>6.0f} "
            + " ".join(f"{parts[key].pss / MIB:>8.0f} MiB" for key in keys)
            + f" {totals[-1][1]:>6} MiB"
        )
        if elapsed >= minutes * 60:
            return parts, totals
        time.sleep(min(every, minutes * 60 - elapsed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, help="how long the stack runs (default 10)")
    parser.add_argument("--rate", type=float, default=40.0, help="events/s served (default 40)")
    parser.add_argument("--every", type=float, help="seconds between samples (default 60)")
    parser.add_argument("--no-browser", action="store_true", help="nobody on the dashboard")
    parser.add_argument(
        "--reuse-services", action="store_true", help="the environment's Kafka and PostgreSQL"
    )
    parser.add_argument(
        "--cluster", action="store_true", help="the cluster layout (up --cluster), each process"
    )
    add_arguments(parser)
    args = parser.parse_args()
    minutes = args.minutes if args.minutes is not None else 0.25 if args.smoke else 10.0
    every = args.every if args.every is not None else 5.0 if args.smoke else 60.0
    report = Report("bench_footprint", smoke=args.smoke)

    mode = ReplayMode.synthetic(options=(f"--event-rate={args.rate:g}",))
    with LiveStack(mode, reuse_services=args.reuse_services, cluster=args.cluster) as live:
        with ExitStack() as browser:
            audience = (
                "nobody on the dashboard"
                if args.no_browser
                else open_dashboard(live.stack.dashboard.url, browser)
            )
            parts, totals = sample(live, minutes, every, audience)
            labels = {part.key: part.what for part in parts_of(live)}
        # After the browser: Playwright's loop would stand in the way of asyncio.run.
        down = live.down_components()
        # A short run may end before the Spark job's first batch (slow on a loaded machine).
        wait_for(lambda: live.events_aggregated() > 0, timeout=300, interval=2)
        aggregated = live.events_aggregated()
        jvm_flags = {
            "kafka.local.heap": live.settings.kafka.local.heap,
            "spark.driver.memory": live.settings.spark.driver.memory,
        }

    services = (
        "Kafka and PostgreSQL: the environment's, which may serve others too"
        if args.reuse_services
        else "every component started for this run"
    )
    command = "up --cluster --replay" if args.cluster else "up --replay"
    context = (
        f"after {minutes:g} min of `{command}` at {args.rate:g} events/s, {audience}; {services}"
    )
    for key, memory in parts.items():
        report.add(
            f"pss.{key}",
            f"PSS: {labels[key]}",
            memory.pss / MIB,
            "MiB",
            note=f"RSS {memory.rss / MIB:,.0f} MiB, {memory.processes} process(es)",
            rss_mib=memory.rss / MIB,
            processes=memory.processes,
        )
    whole = total(parts)
    # The goal is the default (single) layout's; the cluster layout runs seven JVMs more.
    report.add(
        "pss.total",
        "PSS: the whole stack" + ("" if args.cluster else " (goal 1.5 GiB = 1,536 MiB)"),
        whole.pss / MIB,
        "MiB",
        goal=None if args.cluster else Goal(GOAL_MIB, at_least=False),
        note=f"{context}; RSS {whole.rss / MIB:,.0f} MiB (shared pages counted in each process); "
        f"heaps: broker -Xmx{jvm_flags['kafka.local.heap']}, Spark driver "
        f"-Xmx{jvm_flags['spark.driver.memory']}"
        + (
            f", executors -Xmx{live.settings.spark.executor.memory}, Spark daemons "
            f"-Xmx{live.settings.spark.local.daemon_heap}"
            if args.cluster
            else ""
        ),
        rss_mib=whole.rss / MIB,
        processes=whole.processes,
        events_aggregated=aggregated,
        total_pss_mib_by_second=totals,
        **jvm_flags,
    )
    say(f"events aggregated in PostgreSQL: {aggregated:,}; components down: {down or 'none'}")
    report.finish(args.json)
    if down or not aggregated:
        say("the stack did not run as it should: its footprint means nothing")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
