"""Every benchmark at smoke size: it runs to the end and writes its figures (never a timing).

Each script gets ``--smoke --json FILE --reuse-services`` and the session's stack environment, so
it uses the session's Kafka broker and PostgreSQL (fresh topics and databases of its own)
instead of starting another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.stack import Stack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPTS = sorted(HERE.glob("bench_*.py"))


def test_every_benchmark_is_covered() -> None:
    assert [script.name for script in SCRIPTS] == [
        "bench_dashboard.py",
        "bench_footprint.py",
        "bench_freshness.py",
        "bench_ingest.py",
        "bench_load.py",
        "bench_spark.py",
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_benchmark_runs_at_smoke_size(
    script: Path, stack: Stack, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    results = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, str(script), "--smoke", "--reuse-services", "--json", str(results)],
        cwd=ROOT,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(results.read_text())
    assert figures["smoke"] is True
    assert figures["benchmark"] == script.stem
    assert figures["figures"], "no figure written"
    for figure in figures["figures"]:
        assert figure["value"] is not None or figure["note"], figure
        assert figure["what"] in run.stdout  # the printed table carries every figure
