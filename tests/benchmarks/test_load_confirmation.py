"""bench_load's confirmation steps down from the rate its probes found until a run holds: the
stepping alone, over runs that hold below a given rate (the runs themselves are the smoke
test's)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tests.benchmarks.bench_load import confirm


def runs_holding_up_to(ceiling: float, tried: list[tuple[float, int]]) -> Any:
    def run_at(rate: float, number: int) -> Any:
        tried.append((rate, number))
        verdict = SimpleNamespace(held=rate <= ceiling)
        return SimpleNamespace(run=SimpleNamespace(rate=rate, verdict=verdict))

    return run_at


def test_a_rate_that_holds_is_confirmed_by_one_run() -> None:
    tried: list[tuple[float, int]] = []
    runs = confirm(runs_holding_up_to(9_000, tried), 8_400, attempts=3)
    assert tried == [(8_400, 1)]
    assert runs[-1].run.verdict.held


def test_each_run_that_does_not_hold_is_followed_by_one_a_fifth_lower() -> None:
    tried: list[tuple[float, int]] = []
    runs = confirm(runs_holding_up_to(6_000, tried), 8_400, attempts=3)
    # 8,400 x 0.8 = 6,720, to the hundred 6,700 (does not hold); 6,700 x 0.8 = 5,360: 5,400
    assert tried == [(8_400, 1), (6_700, 2), (5_400, 3)]
    assert [run.run.verdict.held for run in runs] == [False, False, True]


def test_it_stops_after_the_attempts_given_and_answers_the_lowest() -> None:
    tried: list[tuple[float, int]] = []
    runs = confirm(runs_holding_up_to(1_000, tried), 8_400, attempts=2)
    assert tried == [(8_400, 1), (6_700, 2)]
    assert runs[-1].run.rate == 6_700 and not runs[-1].run.verdict.held
