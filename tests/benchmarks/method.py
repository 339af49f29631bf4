"""The one benchmark method every ratio uses, and the figures' report.

- Both sides of a ratio are callables that do their whole work and return the seconds it took,
  each timed the same way by its caller: from the first input read to the last output committed
  and visible.
- They run interleaved (baseline, candidate, baseline, candidate …) for ``rounds`` rounds, so a
  slow minute of a noisy machine falls on both; the report prints the best and the median of
  each side and of the per-round ratios.
- A :class:`Report` prints the figures as a table and writes them as JSON
  (``--json FILE``): ``python -m tests.benchmarks.publish`` renders the README's performance
  section from those files, so no figure is copied by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Rounds of an interleaved comparison when the caller does not say (the issue asks for >= 5).
ROUNDS = 5


@dataclass(frozen=True)
class Goal:
    """What a figure should reach: ``value >= target`` (``at_least``) or ``value <= target``."""

    target: float
    at_least: bool = True

    def met(self, value: float) -> bool:
        return value >= self.target if self.at_least else value <= self.target

    def __str__(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.target:g}"


@dataclass
class Figure:
    key: str  # stable id, e.g. "normalize.ratio"
    what: str  # in words, for the README
    value: float | None  # None: not measured (the reason is in ``note``)
    unit: str  # "x", "events/s", "s", "MB" …
    goal: str | None = None
    met: bool | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison:
    """Seconds per round of both sides of a ratio, measured interleaved."""

    units: int  # work items per round (events, rows), the same for both sides
    baseline: list[float]
    candidate: list[float]

    @property
    def ratios(self) -> list[float]:
        """candidate speed / baseline speed, per round (> 1: the candidate is faster)."""
        return [b / c for b, c in zip(self.baseline, self.candidate, strict=True)]

    def rate(self, side: list[float], pick: Callable[[list[float]], float]) -> float:
        return self.units / pick(side)

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": len(self.baseline),
            "units": self.units,
            "baseline_seconds": self.baseline,
            "candidate_seconds": self.candidate,
            "baseline_rate_best": self.rate(self.baseline, min),
            "baseline_rate_median": self.rate(self.baseline, statistics.median),
            "candidate_rate_best": self.rate(self.candidate, min),
            "candidate_rate_median": self.rate(self.candidate, statistics.median),
            "ratio_best": max(self.ratios),
            "ratio_median": statistics.median(self.ratios),
        }


def interleaved(
    units: int,
    baseline: Callable[[], float],
    candidate: Callable[[], float],
    rounds: int = ROUNDS,
    on_round: Callable[[int, float, float], None] | None = None,
) -> Comparison:
    """Run baseline, candidate, baseline, candidate … ``rounds`` times each."""
    comparison = Comparison(units=units, baseline=[], candidate=[])
    for index in range(rounds):
        comparison.baseline.append(baseline())
        comparison.candidate.append(candidate())
        if on_round is not None:
            on_round(index + 1, comparison.baseline[-1], comparison.candidate[-1])
    return comparison


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: the value of a real sample)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }


class Report:
    """The figures of one benchmark run: printed as a table, written as JSON."""

    def __init__(self, benchmark: str, *, smoke: bool = False) -> None:
        self.benchmark = benchmark
        self.smoke = smoke
        self.started = datetime.now(UTC)
        self.command = shlex.join(
            [".venv/bin/python", *(_relative(arg) for arg in sys.argv[:1]), *sys.argv[1:]]
        )
        self.figures: list[Figure] = []

    def add(
        self,
        key: str,
        what: str,
        value: float | None,
        unit: str,
        *,
        goal: Goal | None = None,
        note: str = "",
        **detail: Any,
    ) -> Figure:
        figure = Figure(
            key=key,
            what=what,
            value=value,
            unit=unit,
            goal=None if goal is None else str(goal),
            met=None if goal is None or value is None else goal.met(value),
            note=note,
            detail=detail,
        )
        self.figures.append(figure)
        return figure

    def ratio(
        self,
        key: str,
        what: str,
        comparison: Comparison,
        *,
        goal: Goal | None = None,
        **detail: Any,
    ) -> Figure:
        """The median per-round ratio is the figure; best and the rates are in its detail."""
        summary = comparison.summary()
        return self.add(key, what, summary["ratio_median"], "x", goal=goal, **summary, **detail)

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "smoke": self.smoke,
            "date": self.started.date().isoformat(),
            "started": self.started.isoformat(timespec="seconds"),
            "command": self.command,
            "machine": machine(),
            "figures": [asdict(figure) for figure in self.figures],
        }

    def table(self) -> str:
        rows = [("figure", "value", "goal", "met")]
        for figure in self.figures:
            rows.append(
                (
                    figure.what,
                    format_value(figure.value, figure.unit),
                    figure.goal or "",
                    {None: "", True: "yes", False: "NO"}[figure.met],
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def finish(self, json_path: Path | None) -> None:
        """Print the table; write the JSON where asked."""
        print(f"\n{self.benchmark} ({'smoke size' if self.smoke else 'full size'}):")
        print(self.table())
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
            print(f"figures written to {json_path}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--json FILE and --smoke, shared by every benchmark."""
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny inputs, seconds not minutes: checks the benchmark runs (its figures mean "
        "nothing); what the test suite runs",
    )


def add_sizes(parser: argparse.ArgumentParser, full: dict[str, int]) -> None:
    """An integer option per size (``--edits-per-minute`` for ``edits_per_minute``)."""
    for name, value in full.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {value:,}")


def fill_sizes(args: argparse.Namespace, full: dict[str, int], smoke: dict[str, int]) -> None:
    """The sizes the command line left out: the smoke ones with ``--smoke``, else the full ones."""
    for name, value in (smoke if args.smoke else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def format_value(value: float | None, unit: str, *, markdown: bool = False) -> str:
    """A figure as the table prints it, or (``markdown``) as the README shows it, in bold."""
    if value is None:
        return "not measured"
    bold = "**" if markdown else ""
    if unit == "x":
        return f"{bold}{value:.2f}{'×' if markdown else 'x'}{bold}"
    number = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{bold}{number}{bold} {unit}"


def _relative(arg: str) -> str:
    path = Path(arg).resolve()
    root = Path(__file__).resolve().parents[2]
    return str(path.relative_to(root)) if path.is_relative_to(root) else arg
