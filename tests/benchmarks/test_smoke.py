"""Every benchmark at smoke size: it runs to the end and writes its figures (never a timing).

Each script gets ``--smoke --json FILE --reuse-services`` and the session's stack environment, so
it uses the session's Kafka broker and PostgreSQL (fresh topics and databases of its own)
instead of starting another.

The benchmarks that watch a live pipeline (``LIVE``: at a low rate, or the accuracy benchmark's
short stream) mostly wait: for their processes to start, for Spark's triggers, for the alert
step. They run side by side, each on its own home, ports, topics and database, so the suite
waits once instead of four times. They start with the first
test of this file that runs a benchmark; the others, busy on the CPU, run one at a time
meanwhile, their tests first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.stack import Stack
from tests.conftest import subprocess_environment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LIVE = ("bench_alerts", "bench_footprint", "bench_freshness", "bench_load")
#: The others first: they run while the LIVE ones wait.
SCRIPTS = sorted(HERE.glob("bench_*.py"), key=lambda path: (path.stem in LIVE, path.name))
TIMEOUT = 600


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str
    results: Path


class Smoke:
    """One script's smoke run, started now; ``finished()`` waits for it."""

    def __init__(self, script: Path, env: dict[str, str], directory: Path) -> None:
        self.results = directory / f"{script.stem}.json"
        self.output = directory / f"{script.stem}.out"
        self.errors = directory / f"{script.stem}.err"
        with self.output.open("w") as out, self.errors.open("w") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    "--smoke",
                    "--reuse-services",
                    "--json",
                    str(self.results),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )

    def finished(self) -> Finished:
        try:
            returncode = self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        return Finished(returncode, self.output.read_text(), self.errors.read_text(), self.results)


@pytest.fixture(scope="module")
def live_runs(stack: Stack, stack_env: dict[str, str]) -> Iterator[dict[str, Smoke]]:
    """The LIVE benchmarks, started together once the services run."""
    with tempfile.TemporaryDirectory(prefix="wikipulse-smoke-") as directory:
        env = subprocess_environment(stack_env)
        runs = {stem: Smoke(HERE / f"{stem}.py", env, Path(directory)) for stem in LIVE}
        try:
            yield runs
        finally:
            # One whose test did not wait for it (deselected, or failed first): SIGTERM, which
            # each handles by stopping the processes it started (they run in sessions of their
            # own and would outlive a SIGKILL).
            for run in runs.values():
                if run.process.poll() is None:
                    run.process.terminate()
                    try:
                        run.process.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        run.process.kill()
                        run.process.wait()


def live_selected(request: pytest.FixtureRequest) -> bool:
    """Whether this run includes a LIVE benchmark's test."""
    return any(
        item.module is request.module
        and (callspec := getattr(item, "callspec", None)) is not None
        and callspec.params["script"].stem in LIVE
        for item in request.session.items
    )


def test_every_benchmark_is_covered() -> None:
    assert sorted(script.name for script in SCRIPTS) == [
        "bench_alerts.py",
        "bench_dashboard.py",
        "bench_footprint.py",
        "bench_freshness.py",
        "bench_ingest.py",
        "bench_load.py",
        "bench_now.py",
        "bench_spark.py",
    ]
    assert set(LIVE) <= {script.stem for script in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_benchmark_runs_at_smoke_size(
    script: Path,
    request: pytest.FixtureRequest,
    subprocess_env: dict[str, str],
    tmp_path: Path,
) -> None:
    if script.stem in LIVE:
        run = request.getfixturevalue("live_runs")[script.stem].finished()
    else:
        if live_selected(request):
            request.getfixturevalue("live_runs")  # under way while this one runs
        request.getfixturevalue("stack")
        run = Smoke(script, subprocess_env, tmp_path).finished()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(run.results.read_text())
    assert figures["smoke"] is True
    assert figures["benchmark"] == script.stem
    assert figures["figures"], "no figure written"
    for figure in figures["figures"]:
        assert figure["value"] is not None or figure["note"], figure
        assert figure["what"] in run.stdout  # the printed table carries every figure
