"""The dashboard's arithmetic, pure (no database, no Streamlit): HyperLogLog sketches and the
rounds of the threshold algorithm that finds the exact top contributors of a long span.

- Active editors over a long span: merge the stored sketches of its buckets (the largest
  register wins) and estimate the distinct count (about 2 % off with 4096 registers).
- Top contributors over a long span (Fagin's threshold algorithm): every hourly or daily bucket
  that covers the span lists its users by edits, cut at a depth. A user missing from every list
  has at most the sum of each list's last value; a listed user at most what the lists show plus
  that for the lists that miss them. Exact sums are read only for users who could still make
  the top; once the ``limit``-th best exact sum beats the bound on the unseen, the top is final.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: The HyperLogLog sketches: 2^12 one-byte registers (migration 0003).
SKETCH_SIZE = 4096

Registers = np.ndarray[Any, np.dtype[np.uint8]]


def estimate_distinct(registers: Registers) -> float:
    """HyperLogLog's estimate from merged registers (with the linear-counting correction for
    small counts, which is exact-ish while most registers are empty)."""
    size = registers.size
    if size == 0:
        return 0.0
    alpha = 0.7213 / (1 + 1.079 / size)
    raw = alpha * size * size / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * size and zeros:
        return size * math.log(size / zeros)
    return raw


def merge_sketches(sketches: Sequence[bytes]) -> Registers:
    """The sketch of the union: each register's maximum (empty registers when no sketch)."""
    if not sketches:
        return np.zeros(SKETCH_SIZE, dtype=np.uint8)
    stacked = np.stack([np.frombuffer(bytes(sketch), dtype=np.uint8) for sketch in sketches])
    merged: Registers = stacked.max(axis=0)
    return merged


def prune_candidates(
    listed: Sequence[tuple[int, str, int]],
    *,
    inside: set[int],
    depth: int,
    limit: int,
    known: Mapping[str, int],
) -> tuple[int, list[str]]:
    """One round of the threshold algorithm, from the lists alone (no query).

    ``listed``: (list position, user, edits in that bucket), each list cut at ``depth``;
    ``inside``: the positions of buckets wholly inside the span (the others overhang its edges,
    so their values only bound the user's edits in the span); ``known``: exact sums already
    read. Returns the bound on the sum of any user missing from every list, and the listed users
    whose exact sum must be read: those whose upper bound reaches the ``limit``-th best lower
    bound. Everyone else cannot enter the top.
    """
    lengths: dict[int, int] = {}
    last: dict[int, int] = {}
    for position, _, edits in listed:
        lengths[position] = lengths.get(position, 0) + 1
        last[position] = min(last.get(position, edits), edits)
    # A complete list (shorter than depth) leaves nothing unseen in its bucket.
    cut_value = {p: last[p] if n >= depth else 0 for p, n in lengths.items()}
    unseen = sum(cut_value.values())
    lower: dict[str, int] = {}
    upper: dict[str, int] = {}
    for position, name, edits in listed:
        if position in inside:
            lower[name] = lower.get(name, 0) + edits
        upper[name] = upper.get(name, unseen) + edits - cut_value[position]
    for name, exact in known.items():
        if name in upper:
            lower[name] = upper[name] = exact
    best_lower = sorted((lower.get(name, 0) for name in upper), reverse=True)
    threshold = best_lower[limit - 1] if len(best_lower) >= limit else 0
    wanted = sorted(n for n, high in upper.items() if high >= threshold and n not in known)
    return unseen, wanted


def rank(totals: Mapping[str, int]) -> list[tuple[str, int]]:
    """Users with edits, the most first, ties by name (the order of the seed's views)."""
    return sorted(
        ((name, edits) for name, edits in totals.items() if edits > 0),
        key=lambda item: (-item[1], item[0]),
    )


def top_is_final(ranked: Sequence[tuple[str, int]], *, unseen: int, limit: int) -> bool:
    """Whether no unseen user can enter the top ``limit`` of ``ranked`` (exact sums, best first):
    nobody is unseen, or the ``limit``-th best beats the bound on them."""
    return unseen == 0 or (len(ranked) >= limit and ranked[limit - 1][1] > unseen)
