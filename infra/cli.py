"""``./infra/wikipulse``: run wikipulse on one machine.

up [--cluster] [--replay [FILE] [--speed X] [--once] [--history D] [--burst SPEC] | --live]
                    start what is not running (PostgreSQL, Kafka, the worker, the Spark job, the
                    dashboard; with --replay a local replay server for the worker, of the
                    synthetic stream or of FILE)
down [--purge]      stop what ``up`` started; --purge also deletes $WIKIPULSE_HOME
status              each component: running or not, pid, address, health (exit 1 if down);
                    end-to-end freshness; the consumer lag of the normalizer and the Spark job
logs [component]    follow a component's log
psql [args...]      psql on the configured database, arguments passed through
test [pytest args]  the full test suite, on its own services, state and ports (pytest-xdist
                    workers as the memory allows unless the arguments choose, e.g. -n 0)
record [--minutes N | --events N] [--since TIME] [--out FILE] [--force]
                    record the stream at ingestion.wikimedia.url to NDJSON (infra/replay/record.py)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from app.config import ConfigError, Settings
from app.config.settings import CLUSTER
from app.config.values import parse_duration
from infra.home import PROJECT_ROOT
from infra.layout import record_layout, settings_for
from infra.processes import InfraError
from infra.replay import cli as replay_cli
from infra.replay_server import (
    DEFAULT_SPEED,
    FAULT_OPTIONS,
    ReplayMode,
    parse_fault_option,
    parse_speed,
)
from infra.stack import COMPONENTS, Stack

log = logging.getLogger("wikipulse")
#: ``--replay`` without FILE: the synthetic stream.
SYNTHETIC = object()


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def replay_request(args: argparse.Namespace) -> ReplayMode | None:
    """The replay mode ``up``'s options ask for (None without --replay)."""
    synthetic_only = (
        ("--history", args.history is not None),
        ("--burst", bool(args.burst)),
        ("--seed", args.seed is not None),
    )
    if args.replay is None:
        given = [
            option
            for option, value in (
                ("--speed", args.speed is not None),
                ("--once", args.once),
                ("--replay-option", bool(args.replay_option)),
                *synthetic_only,
            )
            if value
        ]
        if given:
            raise InfraError(f"{', '.join(given)}: only with --replay")
        return None
    try:
        speed = DEFAULT_SPEED if args.speed is None else parse_speed(args.speed)
        options = tuple(parse_fault_option(option) for option in args.replay_option)
    except ValueError as error:
        raise InfraError(str(error)) from None
    if args.replay is not SYNTHETIC:
        given = [option for option, value in synthetic_only if value]
        if given:
            raise InfraError(f"{', '.join(given)}: only for the synthetic stream (without FILE)")
        return ReplayMode.for_file(args.replay, speed=speed, loop=not args.once, options=options)
    if args.once:
        raise InfraError("--once needs a FILE: the synthetic stream has no end")
    try:
        for burst in args.burst:
            replay_cli.parse_burst(burst)  # its error now, not in the server's log
    except argparse.ArgumentTypeError as error:
        raise InfraError(str(error)) from None
    try:
        history = timedelta(0) if args.history is None else parse_duration(args.history)
    except ValueError as error:
        raise InfraError(f"--history {args.history!r}: {error}") from None
    bursts = tuple(f"--burst={burst}" for burst in args.burst)
    return ReplayMode.synthetic(
        speed=speed, options=options + bursts, seed=args.seed, history=history
    )


NEXT_STEPS = (
    ("./infra/wikipulse status", "each component's health, and how fresh the data is"),
    ("./infra/wikipulse logs spark", "follow a log: " + ", ".join((*COMPONENTS, "maven"))),
    ("./infra/wikipulse down", "stop everything (`down --purge` also deletes the state)"),
)


def cmd_up(stack: Stack, args: argparse.Namespace) -> int:
    replay = replay_request(args)
    layout = stack.settings.wikipulse.layout
    _say(f"wikipulse: state in {stack.home.root}, {layout} layout")
    record_layout(stack.home, layout)
    stack.up(progress=_say, replay=replay, live=args.live)
    _print_status(stack)
    _say(f"\ndashboard: {stack.dashboard.url}   worker metrics: {stack.worker.url}/metrics")
    steps = list(NEXT_STEPS)
    if stack.replay_mode is not None:
        steps[2:2] = [
            ("./infra/wikipulse logs replay", "what the replay server does"),
            ("./infra/wikipulse up --live", "follow Wikimedia's live stream instead"),
        ]
    width = max(len(command) for command, _ in steps)
    _say("next:")
    for command, what in steps:
        _say(f"  {command:<{width}}  {what}")
    hint = stack.offline_hint()  # last: the one thing to do when the live stream is out of reach
    if hint is not None:
        _say(f"\n{hint}")
    return 0


def cmd_down(stack: Stack, args: argparse.Namespace) -> int:
    unknown = sorted(set(args.components) - set(COMPONENTS))
    if unknown:
        raise InfraError(f"no component {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}")
    if args.purge and args.components:
        raise InfraError("--purge deletes all local state: use it without components")
    stack.down(purge=args.purge, components=args.components, progress=_say)
    return 0


def _print_status(stack: Stack) -> bool:
    all_up = True
    states = stack.status()
    width = max(9, *(len(state.name) for state in states))
    for state in states:
        mark = "up  " if state.healthy else ("--  " if not state.managed else "DOWN")
        pid = f"pid {state.pid}" if state.pid else "-"
        _say(f"  {mark} {state.name:<{width}} {pid:<11} {state.address:<22} {state.detail}")
        for note in state.notes:
            _say(f"       {'':<{width}} {note}")
        all_up = all_up and (state.healthy or not state.required)
    _say(f"  freshness: {stack.freshness()}")
    for line in stack.lag():
        _say(f"  {line}")
    for line in stack.alerts():
        _say(f"  {line}")
    return all_up


def cmd_status(stack: Stack, _: argparse.Namespace) -> int:
    _say(f"wikipulse: state in {stack.home.root}, {stack.settings.wikipulse.layout} layout")
    return 0 if _print_status(stack) else 1


def cmd_logs(stack: Stack, args: argparse.Namespace) -> int:
    component = args.component
    if component not in stack.log_names():
        raise InfraError(f"no log {component}; choose from {', '.join(stack.log_names())}")
    path = stack.log_path(component)
    if not path.exists():
        raise InfraError(f"no log for {component} yet ({path})")
    command = ["tail", "-n", str(args.lines), *(["-F"] if not args.no_follow else []), str(path)]
    return subprocess.call(command)


def cmd_psql(stack: Stack, args: argparse.Namespace) -> int:
    command, env = stack.psql_command(args.args)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130


BROWSER = "/usr/bin/chromium"


def ensure_browser() -> None:
    """The browser tests drive Debian's chromium; install it when missing (as root)."""
    if Path(BROWSER).exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError(
            f"the browser tests need Debian's chromium at {BROWSER}: sudo apt-get install chromium"
        )
    _say("wikipulse: installing Debian's chromium for the browser tests (first time only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if result.returncode != 0:
            raise InfraError(
                f"{' '.join(command)} failed:\n{result.stdout[-800:]}{result.stderr[-800:]}"
            )


#: pytest-xdist's workers for the suite, by the machine's memory: (at least this much, workers).
#: Each group of tests that share a service runs on one worker (tests/conftest.py,
#: SERVICE_GROUPS). The suite mostly waits for processes to start and for Spark's triggers, so
#: the groups' waits overlap (tests/README.md, Running it). Two workers' stacks side by side
#: peak at ~6.5 GB, three (the two fault stacks apart) at ~9 GB (measured here); below 8 GB
#: the suite runs in one process.
PARALLEL_WORKERS = ((12 << 30, 3), (8 << 30, 2))
#: An argument by which a user chooses the parallelism (``-n 0``: one process, as plain pytest).
PARALLEL_CHOSEN = re.compile(r"^(-n|--numprocesses|--dist)(=|\d|$)|no:xdist$")


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def pytest_command(pytest_args: Sequence[str], memory: int | None = None) -> list[str]:
    """The suite's pytest command: the PARALLEL_WORKERS this machine's memory (``memory``
    bytes; default: this machine's) allows, with ``--dist loadgroup``, unless the arguments
    choose otherwise."""
    chosen = any(PARALLEL_CHOSEN.search(arg) for arg in pytest_args)
    available = total_memory() if memory is None else memory
    workers = next((n for least, n in PARALLEL_WORKERS if available >= least), 0)
    parallel = ("--numprocesses", str(workers), "--dist", "loadgroup") if workers else ()
    return [sys.executable, "-m", "pytest", *(() if chosen else parallel), *pytest_args]


#: The JVMs the suite starts (brokers, Spark drivers and executors) live for seconds to minutes:
#: the C1 compiler alone serves them, and spares the CPU that C2 compiles with while every stage
#: shares two cores (tests/spark/test_alerts.py: 20 % less CPU). For the suite only; ``up`` and
#: the benchmarks keep the JVM's defaults. A JAVA_TOOL_OPTIONS of the user's wins.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def cmd_test(_: Stack | None, args: argparse.Namespace) -> int:
    """Run pytest; the suite's fixtures start their own services in a temporary home."""
    ensure_browser()
    env = dict(os.environ)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    env.setdefault("JAVA_TOOL_OPTIONS", TEST_JVM_OPTIONS)
    command = pytest_command(args.pytest_args)
    _say("wikipulse: " + " ".join(command))
    result = subprocess.call(command, cwd=PROJECT_ROOT, env=env)
    if result == 5:
        sys.stderr.write("wikipulse: pytest collected no tests\n")
        return 1
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./infra/wikipulse",
        description="Run wikipulse (Kafka, PostgreSQL and the pipeline) on one machine.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    up = commands.add_parser(
        "up",
        help="start what is not running, migrate, create topics",
        description="Start what is not running, in dependency order. The mode (live stream or "
        "replay) is kept in $WIKIPULSE_HOME: a plain `up` brings back the same one.",
    )
    source = up.add_mutually_exclusive_group()
    source.add_argument(
        "--replay",
        nargs="?",
        const=SYNTHETIC,
        metavar="FILE",
        help="replay mode: the worker follows a local replay server of the synthetic stream "
        "(endless, fresh ids and current times, a new random seed), or of FILE, an NDJSON file "
        "of recentchange events (a recording)",
    )
    source.add_argument(
        "--live", action="store_true", help="leave replay mode: follow ingestion.wikimedia.url"
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster layout on this machine: three Kafka brokers (replication factor 3, "
        "min.insync.replicas 2) in place of one; the keys of app/config/conf/layout.cluster.yaml. "
        "Kept in $WIKIPULSE_HOME: a plain `up` brings it back (`down --purge` to leave it)",
    )
    up.add_argument(
        "--speed",
        metavar="X",
        help=f"with --replay: X times the event-time pace (default {DEFAULT_SPEED:g}: the "
        "synthetic stream's 40 events/s, or FILE's recorded pace); `max`: as fast as possible "
        "(with --once)",
    )
    up.add_argument(
        "--once",
        action="store_true",
        help="with --replay FILE: serve FILE once, then keep the stream open and silent "
        "(default: loop forever, each new pass with fresh ids and times shifted to now)",
    )
    up.add_argument(
        "--history",
        metavar="DURATION",
        help="with --replay (the synthetic stream): begin it this long ago, e.g. '2 hours': the "
        "worker gets that much event time at once, then the live pace (at most a day)",
    )
    up.add_argument(
        "--burst",
        action="append",
        default=[],
        metavar="SPEC",
        help="with --replay (the synthetic stream), repeatable: inject a labelled burst, minutes "
        "counted from the stream's start: "
        + (replay_cli.parse_burst.__doc__ or "").replace("``", "").rstrip(".")
        + " (infra/replay/bursts.py)",
    )
    up.add_argument(
        "--seed",
        type=int,
        help="with --replay (the synthetic stream): same seed, same events (default: random)",
    )
    up.add_argument(
        "--replay-option",
        action="append",
        default=[],
        metavar="OPTION=N",
        help="with --replay, advanced: make the replay server misbehave, to watch the worker "
        "cope (repeatable): " + ", ".join(FAULT_OPTIONS) + "; e.g. --replay-option=--drop-every=25",
    )
    down = commands.add_parser("down", help="stop what `up` started")
    down.add_argument(
        "components", nargs="*", metavar="component", help="only these: " + ", ".join(COMPONENTS)
    )
    down.add_argument("--purge", action="store_true", help="also delete all local state")
    commands.add_parser("status", help="show each component's health (exit 1 if one is down)")
    logs = commands.add_parser("logs", help="follow a component's log")
    logs.add_argument(
        "component",
        nargs="?",
        default="kafka",
        help="one of " + ", ".join((*COMPONENTS, "maven")) + " (kafka-2 … in the cluster layout)",
    )
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--no-follow", action="store_true", help="print and exit")
    psql = commands.add_parser("psql", help="psql on the configured database")
    psql.add_argument("args", nargs=argparse.REMAINDER)
    test = commands.add_parser("test", help="run the full test suite")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    record = commands.add_parser(
        "record", help="record the stream to NDJSON (`record --help` for its options)"
    )
    record.add_argument("record_args", nargs=argparse.REMAINDER)
    return parser


PASSTHROUGH = {"psql": "args", "test": "pytest_args", "record": "record_args"}

HANDLERS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "logs": cmd_logs,
    "psql": cmd_psql,
}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        # Everything after `psql` / `test` belongs to psql / pytest, options included.
        args = argparse.Namespace(command=argv[0], **{PASSTHROUGH[argv[0]]: argv[1:]})
    else:
        args = build_parser().parse_args(argv)
    try:
        if args.command == "record":
            # Its own options and errors: python -m infra.replay record, named as run here.
            return replay_cli.main(["record", *args.record_args], prog="./infra/wikipulse")
        if args.command == "test":
            return cmd_test(None, args)
        settings: Settings = settings_for(CLUSTER if getattr(args, "cluster", False) else None)
        return HANDLERS[args.command](Stack(settings), args)
    except ConfigError as error:
        sys.stderr.write(f"wikipulse: {error}\n")
        return 2
    except InfraError as error:
        sys.stderr.write(f"wikipulse: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
