"""The benchmark method and its publisher, on figures written by hand (no benchmark runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import method, publish


def test_sides_run_interleaved_and_each_round_pairs_them() -> None:
    calls: list[str] = []
    baseline_seconds = iter([2.0, 4.0, 2.0])
    candidate_seconds = iter([4.0, 4.0, 1.0])

    def baseline() -> float:
        calls.append("A")
        return next(baseline_seconds)

    def candidate() -> float:
        calls.append("B")
        return next(candidate_seconds)

    comparison = method.interleaved(100, baseline, candidate, rounds=3)
    assert calls == ["A", "B", "A", "B", "A", "B"]
    assert comparison.ratios == [0.5, 1.0, 2.0]
    summary = comparison.summary()
    assert summary["ratio_median"] == 1.0
    assert summary["ratio_best"] == 2.0
    assert summary["baseline_rate_best"] == 50.0  # 100 units in 2 s
    assert summary["candidate_rate_best"] == 100.0  # 100 units in 1 s
    assert summary["candidate_rate_median"] == 25.0  # median 4 s


def test_percentile_is_a_real_sample_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert method.percentile(values, 0.5) == 50.0
    assert method.percentile(values, 0.99) == 99.0
    assert method.percentile(values, 1.0) == 100.0
    assert method.percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        method.percentile([], 0.5)


def test_goals_both_ways() -> None:
    assert method.Goal(0.5).met(0.5) and not method.Goal(0.5).met(0.49)
    assert method.Goal(3, at_least=False).met(2.9) and not method.Goal(3, at_least=False).met(3.1)
    assert str(method.Goal(12000)) == "≥ 12000"


def write_report(path: Path, *, smoke: bool = False) -> None:
    report = method.Report("bench_example", smoke=smoke)
    comparison = method.Comparison(units=1000, baseline=[1.0, 1.0], candidate=[2.0, 4.0])
    report.ratio("example.ratio", "example work vs a bare loop", comparison, goal=method.Goal(0.5))
    report.add("example.p99", "freshness p99", 2.5, "s", goal=method.Goal(3, at_least=False))
    report.add("example.gone", "what could not be measured", None, "s", note="needs a cluster")
    path.write_text(json.dumps(report.as_dict()))


def test_publish_renders_every_figure_with_its_goal_and_the_command(tmp_path: Path) -> None:
    results = tmp_path / "example.json"
    write_report(results)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{publish.START}\nold\n{publish.END}\n\nafter\n")
    publish.publish([results], readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old" not in text
    # Per-round ratios 0.5 and 0.25: median 0.375, best 0.5; the candidate's median rate is
    # 1000 units / 3 s.
    assert (
        "| example work vs a bare loop | **0.38×**: median of 2 interleaved rounds (best 0.50×)"
        in text
    )
    assert "333 against 1,000 events/s (medians) | ≥ 0.5 | **missed** |" in text
    assert "| freshness p99 | **2.50** s | ≤ 3 | met |" in text
    assert "| what could not be measured | not measured. needs a cluster |  |  |" in text
    assert "**bench_example**, measured " in text and "`.venv/bin/python" in text


def test_publish_refuses_smoke_figures_and_a_readme_without_the_section(tmp_path: Path) -> None:
    smoke = tmp_path / "smoke.json"
    write_report(smoke, smoke=True)
    readme = tmp_path / "README.md"
    readme.write_text(f"{publish.START}\n{publish.END}\n")
    with pytest.raises(publish.PublishError, match="smoke-size"):
        publish.publish([smoke], readme)
    full = tmp_path / "full.json"
    write_report(full)
    readme.write_text("no section here\n")
    with pytest.raises(publish.PublishError, match="performance:start"):
        publish.publish([full], readme)
    with pytest.raises(publish.PublishError, match="no results"):
        publish.publish([], readme)


def test_the_readme_section_is_the_published_results() -> None:
    """What infra/README.md shows is exactly what the committed results render to."""
    text = publish.README.read_text()
    assert text.count(publish.START) == 1 and text.count(publish.END) == 1
    section = text[text.index(publish.START) : text.index(publish.END) + len(publish.END)]
    results = sorted(publish.RESULTS.glob("*.json"))
    assert results, "no committed results in tests/benchmarks/results/"
    assert section == publish.render([json.loads(path.read_text()) for path in results])


def test_publish_sets_the_load_benchmark_of_both_layouts_side_by_side(tmp_path: Path) -> None:
    paths = []
    for name, rate, extra in (("single", 7100.0, None), ("cluster", 6000.0, 27.5)):
        report = method.Report("bench_load")
        report.add("load.sustained_rate", "sustained rate", rate, "events/s")
        report.add("load.lost", "served events missing", 0, "events")
        if extra is not None:
            report.add("load.cpu.spark_cluster", "CPU of the Spark cluster", extra, "% of a core")
        result = report.as_dict()
        result["command"] = "bench_load.py" + (" --cluster" if name == "cluster" else "")
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(result))
        paths.append(path)
    readme = tmp_path / "README.md"
    readme.write_text(f"{publish.START}\n{publish.END}\n")
    publish.publish(list(reversed(paths)), readme)  # the order of the files does not matter
    text = readme.read_text()
    assert "| what | single node | cluster layout |" in text
    assert "| sustained rate | 7,100 events/s | 6,000 events/s |" in text
    assert "| served events missing | 0.00 events | 0.00 events |" in text
    assert "| CPU of the Spark cluster | — | 27.50 % of a core |" in text
    # Then each run's own table, the single node's first.
    assert text.index("`bench_load.py`") < text.index("`bench_load.py --cluster`")
