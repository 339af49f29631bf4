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

import pytest

from app.config import Settings, load_settings
from infra.processes import free_port
from infra.stack import Stack
from tests import recordings

# The Spark fixtures serve tests/spark/ and tests/recorded/: one plugin, so one SparkSession.
pytest_plugins = ("tests.spark.fixtures",)

RECORDED_RAN = pytest.StashKey[list[str]]()
RECORDED_SELECTED = pytest.StashKey[int]()

TEST_PASSWORD = "test-password-Ω"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RECORDED_RAN] = []
    try:
        recordings.recordings_dir()
    except recordings.RecordingsError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[RECORDED_SELECTED] = sum(1 for i in items if i.get_closest_marker("recorded"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.when == "call" and item.get_closest_marker("recorded") is not None:
        item.config.stash[RECORDED_RAN].append(item.nodeid)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's last line: what the ``recorded`` layer ran on which recordings, or why not."""
    selected = config.stash.get(RECORDED_SELECTED, 0)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not selected or reporter is None or config.option.collectonly:
        return
    ran = len(config.stash[RECORDED_RAN])
    directory = recordings.recordings_dir()
    if directory is None:
        line = (
            f"recorded: {selected - ran} of {selected} recorded tests not run, no recordings: "
            f"{recordings.HOW_TO}"
        )
    else:
        line = f"recorded: {ran} of {selected} recorded tests ran on the recordings in {directory}"
    reporter.write_line(line, yellow=ran < selected)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With WIKIPULSE_RECORDINGS set (as in CI), a run of the whole suite that ran no recorded
    test fails."""
    wanted = session.config.stash.get(RECORDED_SELECTED, 0)
    if recordings.required() and wanted and not session.config.stash[RECORDED_RAN]:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
