"""Fixtures of the fault suite: one stack for the whole package, and the results file.

``faults``: ``./infra/wikipulse up --replay`` on a home and free ports of its own (a third Kafka
and PostgreSQL beside the session's and the end-to-end test's), warmed up with a first run of
real events through every hop; stopped and deleted after the last fault test.

``record``: ``record("3")`` gives the test a :class:`~tests.faults.results.Figures` to fill;
after the test it is written, with the test's outcome and duration, to the results file
(``$WIKIPULSE_RESULTS``, else ``faults-results.json`` in pytest's base temporary directory).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.conftest import add_to_summary, make_home
from tests.faults.pipeline import SAMPLE, FaultStack
from tests.faults.results import FAULTS_BY_ID, Figures, Results, results_path
from tests.harness import cli_environment, run_cli

CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


@pytest.fixture(scope="session")
def fault_results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Results]:
    results = Results(results_path(tmp_path_factory.getbasetemp()))
    yield results
    if results.entries:
        add_to_summary(
            request.config,
            f"fault figures: {results.path} "
            f"(publish: .venv/bin/python -m tests.faults.publish {results.path})",
        )


@pytest.fixture(scope="package")
def faults(
    fault_results: Results, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultStack]:
    home = make_home("wikipulse-faults-")
    workdir = Path(tempfile.mkdtemp(prefix="wikipulse-faults-files-"))
    env = cli_environment(
        home,
        INGESTION_WIKIMEDIA_FILTERS_NAMESPACES="[]",  # every namespace: all events count
        INGESTION_BACKOFF_INITIAL="100 ms",  # reconnect quickly after each fault
        INGESTION_BACKOFF_MAX="1 second",
        # Each run's file is served once, then the stream is silent: a worker still healthy
        # however long a loaded machine takes to recover (C2 once took over the 2 minutes).
        INGESTION_HEALTH_TIMEOUT="1 hour",
        SPARK_TRIGGER_PROCESSING_TIME="2 seconds",
    )
    stack = FaultStack(home, env, workdir)
    started = time.monotonic()
    try:
        warm_up = stack.start("warm-up", stack.fresh_events(SAMPLE[:60]))
        stack.wait_caught_up(warm_up, started)
        fault_results.stack_seconds = round(time.monotonic() - started, 1)
        yield stack
    finally:
        fault_results.finish(time.monotonic() - started)
        run_cli(env, "down", timeout=180)
        # The components' logs outlive the stack, for the post-mortem of a failed fault.
        kept = tmp_path_factory.mktemp("faults-logs")
        if (home / "logs").exists():
            shutil.copytree(home / "logs", kept, dirs_exist_ok=True)
        if (home / "postgres" / "postgres.log").exists():
            shutil.copy(home / "postgres" / "postgres.log", kept)
        run_cli(env, "down", "--purge", timeout=180)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def record(
    request: pytest.FixtureRequest, fault_results: Results
) -> Iterator[Callable[[str], Figures]]:
    made: list[Figures] = []
    started = time.monotonic()

    def figures_for(fault: str) -> Figures:
        if fault not in FAULTS_BY_ID:
            raise ValueError(f"unknown fault {fault!r}")
        figures = Figures(fault)
        made.append(figures)
        return figures

    yield figures_for
    report = request.node.stash.get(CALL_REPORT, None)
    outcome = report.outcome if report is not None else "error"
    for figures in made:
        fault_results.add(
            {
                "fault": figures.fault,
                "title": FAULTS_BY_ID[figures.fault].title,
                "test": request.node.nodeid,
                "outcome": outcome,
                "test_seconds": round(time.monotonic() - started, 1),
                **{name: figures.get(name) for name in Figures.STANDARD},
                "details": figures.details,
            }
        )
