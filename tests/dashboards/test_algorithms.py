"""dashboards.algorithms: the HyperLogLog arithmetic and the rounds of the threshold algorithm.
Pure: no database. Every expected value is worked out by hand in its comment."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from dashboards import algorithms
from dashboards.algorithms import SKETCH_SIZE


def registers(*values: int, size: int | None = None) -> np.ndarray:
    """A register array: ``values`` first, then empty registers up to ``size``."""
    array = np.zeros(size or len(values), dtype=np.uint8)
    array[: len(values)] = values
    return array


def alpha(size: int) -> float:
    return 0.7213 / (1 + 1.079 / size)


# (registers, expected estimate, why)
ESTIMATES = [
    (registers(), 0.0, "no registers: nothing seen"),
    (registers(size=SKETCH_SIZE), 0.0, "all empty: linear counting, 4096 ln(4096/4096) = 0"),
    (
        registers(3, size=SKETCH_SIZE),
        1.000122,  # 4096 ln(4096/4095) = 4096 (1/4096 + 1/(2 * 4096^2) + ...) = 1 + 1/8192
        "one register set: linear counting, about one name",
    ),
    (registers(1, 1, 0, 0), 2.772589, "half the registers empty: 4 ln(4/2) = 4 ln 2"),
    (
        registers(1, 1, 1, 1),
        4.544520,  # alpha(4) = 0.7213 / 1.26975 = 0.568065; 0.568065 * 16 / (4 * 2^-1)
        "no empty register: the raw estimate, however small",
    ),
    (
        registers(20, 20, 20, 20, 20, 20, 20, 0),
        40.676631,  # alpha(8) = 0.7213 / 1.134875 = 0.6355766; * 64 = 40.676903; / (1 + 7 * 2^-20)
        "raw estimate above 2.5 x 8 = 20: the raw estimate, not 8 ln 8 = 16.64",
    ),
]


@pytest.mark.parametrize(("sketch", "expected", "why"), ESTIMATES, ids=[e[2] for e in ESTIMATES])
def test_estimate_distinct(sketch: np.ndarray, expected: float, why: str) -> None:
    assert algorithms.estimate_distinct(sketch) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_the_hand_worked_constants() -> None:
    # the approximations of the table above, from the formulas
    assert 4096 * math.log(4096 / 4095) == pytest.approx(1 + 1 / 8192, rel=1e-7)
    assert alpha(4) * 16 / 2 == pytest.approx(4.544520, rel=1e-6)
    assert alpha(8) * 64 / (1 + 7 * 2**-20) == pytest.approx(40.676631, rel=1e-6)


def test_one_name_in_a_real_sized_sketch_counts_as_one() -> None:
    assert round(algorithms.estimate_distinct(registers(0, 3, size=SKETCH_SIZE))) == 1


# (stored sketches, merged registers)
MERGES = [
    ([bytes([0, 2, 1, 0]), bytes([1, 1, 0, 0])], [1, 2, 1, 0]),
    ([bytes([5, 0, 7])], [5, 0, 7]),
    ([bytes([1, 0, 0]), bytes([0, 2, 0]), bytes([0, 0, 3])], [1, 2, 3]),
    ([memoryview(bytes([4, 1])), bytes([2, 3])], [4, 3]),  # as psycopg2 returns bytea
]


@pytest.mark.parametrize(("sketches", "merged"), MERGES)
def test_merge_sketches_keeps_each_registers_maximum(
    sketches: Sequence[bytes], merged: list[int]
) -> None:
    assert algorithms.merge_sketches(sketches).tolist() == merged


def test_merging_nothing_gives_an_empty_sketch() -> None:
    merged = algorithms.merge_sketches([])
    assert merged.dtype == np.uint8 and merged.tolist() == [0] * SKETCH_SIZE


#: Two lists cut at depth 2: bucket 1 wholly inside the span, bucket 2 overhanging it. Each full
#: list's last value bounds its unseen users: 40 + 5 = 45 for a user in neither.
LISTED = [(1, "a", 50), (1, "b", 40), (2, "c", 30), (2, "a", 5)]

# (listed, inside, depth, limit, known, unseen, wanted, why)
ROUNDS = [
    # lower: a 50, b 40, c 0 (bucket 2 only bounds); upper: a 45+50-40+5-5 = 55,
    # b 45+40-40 = 45, c 45+30-5 = 70; the best lower bound is 50: b cannot reach it
    (LISTED, {1}, 2, 1, {}, 45, ["a", "c"], "reads only who can make the top"),
    # c's exact 60 is both its bounds and the threshold: a's 55 and b's 45 fall short
    (LISTED, {1}, 2, 1, {"c": 60}, 45, [], "an exact sum counts as both bounds"),
    # lists shorter than the depth are complete: nobody unseen; lower = upper: a 55, b 40, c 30
    (LISTED, {1, 2}, 3, 1, {}, 0, ["a"], "complete lists leave nothing unseen"),
    # five wanted, three listed: the threshold is 0 and everyone listed is read
    (LISTED, {1}, 2, 5, {}, 45, ["a", "b", "c"], "fewer listed than the limit"),
    # the second best lower bound is b's 40: every upper bound (55, 45, 70) reaches it
    (LISTED, {1}, 2, 2, {}, 45, ["a", "b", "c"], "a top two"),
    # a tie at the threshold is read: upper a = b = 10 + 10 - 10 = 10, lower a = b = 10
    ([(1, "a", 10), (1, "b", 10)], {1}, 2, 1, {}, 10, ["a", "b"], "ties are read"),
    ([], set(), 2, 1, {}, 0, [], "no lists"),
]


@pytest.mark.parametrize(
    ("listed", "inside", "depth", "limit", "known", "unseen", "wanted", "why"),
    ROUNDS,
    ids=[r[-1] for r in ROUNDS],
)
def test_prune_candidates(
    listed: Sequence[tuple[int, str, int]],
    inside: set[int],
    depth: int,
    limit: int,
    known: Mapping[str, int],
    unseen: int,
    wanted: list[str],
    why: str,
) -> None:
    got = algorithms.prune_candidates(listed, inside=inside, depth=depth, limit=limit, known=known)
    assert got == (unseen, wanted)


# (exact sums, ranked)
RANKINGS = [
    ({}, []),
    ({"b": 3, "a": 3, "c": 5}, [("c", 5), ("a", 3), ("b", 3)]),  # ties by name
    ({"a": 0, "b": 1}, [("b", 1)]),  # no edits in the span: not a contributor
]


@pytest.mark.parametrize(("totals", "ranked"), RANKINGS)
def test_rank(totals: Mapping[str, int], ranked: list[tuple[str, int]]) -> None:
    assert algorithms.rank(totals) == ranked


# (ranked, unseen, limit, final, why)
FINALS = [
    ([], 0, 1, True, "nobody unseen"),
    ([("a", 10)], 9, 1, True, "the best beats every unseen user"),
    ([("a", 10)], 10, 1, False, "an unseen user could tie the best"),
    ([("a", 10)], 1, 2, False, "fewer exact sums than the limit"),
    ([("a", 10), ("b", 3)], 3, 2, False, "the second could be tied"),
    ([("a", 10), ("b", 3)], 2, 2, True, "the second beats every unseen user"),
]


@pytest.mark.parametrize(
    ("ranked", "unseen", "limit", "final", "why"), FINALS, ids=[f[-1] for f in FINALS]
)
def test_top_is_final(
    ranked: list[tuple[str, int]], unseen: int, limit: int, final: bool, why: str
) -> None:
    assert algorithms.top_is_final(ranked, unseen=unseen, limit=limit) is final
