"""Session-wide services: one real Kafka broker and one real PostgreSQL for the whole run.

They run in a temporary ``WIKIPULSE_HOME`` on free ports, started by the same code as
``./infra/wikipulse up`` (infra.stack.Stack), and are stopped and deleted at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings, load_settings
from infra.processes import free_port
from infra.stack import Stack
from tests import recordings
from tests.faults.results import RESULTS_VARIABLE

# The Spark fixtures serve tests/spark/ and tests/recorded/: one plugin, so one SparkSession.
pytest_plugins = ("tests.spark.fixtures",)


TEST_PASSWORD = "test-password-Ω"

#: The fixtures that start services, and the xdist group of every test that uses one (directly or
#: through another fixture). ``./infra/wikipulse test`` runs pytest-xdist workers with
#: ``--dist loadgroup`` (infra/cli.py, PARALLEL_WORKERS): a group runs on one worker, so each
#: of these services is started once per run, and the groups' waits overlap. Tests that use
#: none run wherever a worker is free.
SERVICE_GROUPS = {
    # The cluster layout's stack (tests/faults/test_cluster.py), beside the single-node one; first:
    # its fault tests use the fault suite's results too, and belong with their stack.
    "cluster": "cluster-stack",
    "stack_env": "session-stack",  # the session's Kafka and PostgreSQL, the tests' SparkSession
    "fault_results": "faults",  # the fault suite's single-node stack and its results file
    "secure_services": "secured-services",
    "replay_stack": "end-to-end",
    "alerts_stack": "alerts-end-to-end",
}


class RecordedTally:
    """What the ``recorded`` layer selected and ran, counted from the test reports: under xdist
    only the reports reach the process that prints the summary."""

    def __init__(self) -> None:
        self.selected = 0
        self.ran = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "recorded" not in report.keywords:
            return
        if report.when == "setup":  # every test reports its set-up, a skipped one too
            self.selected += 1
        elif report.when == "call":
            self.ran += 1


RECORDED = pytest.StashKey[RecordedTally]()
#: Lines a part of the suite adds to the end of the run's output (``add_to_summary``).
SUMMARY = pytest.StashKey[list[str]]()


def add_to_summary(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(SUMMARY, []).append(line)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(RESULTS_VARIABLE) and config.getoption("numprocesses", None):
        # Each xdist worker runs some of the faults: one file for them all needs one process.
        raise pytest.UsageError(
            f"{RESULTS_VARIABLE} collects the fault figures into one file: run in one process "
            "(`./infra/wikipulse test -n 0 tests/faults`)"
        )
    if not hasattr(config, "workerinput"):  # an xdist worker reports to the main process
        tally = config.stash[RECORDED] = RecordedTally()
        config.pluginmanager.register(tally, "recorded-tally")
    try:
        recordings.recordings_dir()
    except recordings.RecordingsError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the tests' ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        group = next((g for name, g in SERVICE_GROUPS.items() if name in names), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's last line: what the ``recorded`` layer ran on which recordings, or why not."""
    tally = config.stash.get(RECORDED, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if tally is None or not tally.selected or reporter is None:
        return
    directory = recordings.recordings_dir()
    if directory is None:
        line = (
            f"recorded: {tally.selected - tally.ran} of {tally.selected} recorded tests not run, "
            f"no recordings: {recordings.HOW_TO}"
        )
    else:
        line = (
            f"recorded: {tally.ran} of {tally.selected} recorded tests ran on the recordings in "
            f"{directory}"
        )
    reporter.write_line(line, yellow=tally.ran < tally.selected)


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With WIKIPULSE_RECORDINGS set (as in CI), a run of the whole suite that ran no recorded
    test fails."""
    tally = session.config.stash.get(RECORDED, None)
    if tally is not None and recordings.required() and tally.selected and not tally.ran:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its summary lines go to the main process
        workeroutput["summary"] = session.config.stash.get(SUMMARY, [])


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's: a worker has finished
def pytest_testnodedown(node: Any, error: object) -> None:
    for line in node.workeroutput.get("summary", []) if hasattr(node, "workeroutput") else ():
        add_to_summary(node.config, line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in terminalreporter.config.stash.get(SUMMARY, []):
        terminalreporter.write_line(line)


#: The Spark driver's heap in every stack the suite starts (spark-submit's JVM) and in the Spark
#: tests' own SparkSession: one value everywhere, small enough for the suite to fit a 4 GB machine.
#: Not in stack_environment: the benchmarks' stacks keep the configured default.
SPARK_DRIVER_MEMORY = "768m"


def stack_environment(home: Path) -> dict[str, str]:
    """Environment variables for a stack of our own: its home, free ports, a password."""
    return {
        "ENVIRONMENT": "development",
        "WIKIPULSE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "KAFKA_LOCAL_CONTROLLER_PORT": str(free_port()),
        "POSTGRES_PORT": str(free_port()),
        "POSTGRES_PASSWORD": TEST_PASSWORD,
        "APP_WEB_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
        # Never pick up a developer's .env.
        "WIKIPULSE_ENV_FILE": str(home / "no.env"),
    }


#: The JVM options of every ``spark-submit`` the suite's stacks run: the client JIT only and the
#: serial collector start the driver ~2.5 s sooner (of ~12 s, measured here), and the suite
#: starts some thirty Spark jobs that each handle a few hundred events. Never in a deployment:
#: both cost throughput under load.
SPARK_SUBMIT_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def suite_environment(home: Path) -> dict[str, str]:
    """stack_environment for a stack the suite starts: with the suite's Spark driver memory and
    start-up options."""
    return {
        **stack_environment(home),
        "SPARK_DRIVER_MEMORY": SPARK_DRIVER_MEMORY,
        "SPARK_SUBMIT_OPTS": SPARK_SUBMIT_OPTS,
    }


def make_home(prefix: str) -> Path:
    # Not under pytest's tmp_path: its parents are private (0700), and PostgreSQL's own user
    # must be able to reach its data directory.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    home = make_home("wikipulse-test-")
    yield suite_environment(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_settings(stack_env: dict[str, str]) -> Settings:
    return load_settings(environ=stack_env)


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    """The running services (PostgreSQL migrated to head, Kafka with the topics)."""
    services = Stack(stack_settings)
    try:
        services.up(pipeline=False)  # the pipeline's processes are started by their tests
        yield services
    finally:
        services.down(purge=True)


def subprocess_environment(stack_env: dict[str, str]) -> dict[str, str]:
    """os.environ without any wikipulse variable of the developer's, plus the stack's."""
    from app.config import ENV_ALIASES, ENV_VARS

    ours = set(ENV_VARS) | set(ENV_ALIASES) | {"WIKIPULSE_CONFIG_DIR", "WIKIPULSE_ENV_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(stack_env)
    return env


@pytest.fixture
def subprocess_env(stack_env: dict[str, str]) -> dict[str, str]:
    """os.environ without any wikipulse variable of the developer's, plus the stack's."""
    return subprocess_environment(stack_env)
