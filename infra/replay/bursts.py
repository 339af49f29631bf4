"""Labelled bursts on top of the synthetic stream (infra/replay/synthetic.py): a wiki at N× its
rate, a page edited by K people, a wiki gone silent. What the analytics are measured against
(tests/benchmarks/bench_alerts.py) and what ``--burst`` describes (infra/replay/cli.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from infra.replay.payload import iso
from infra.replay.world import WIKI_INDEX, WIKI_SHARE


class BurstKind(StrEnum):
    WIKI = "wiki"  # one wiki at N times its usual rate
    PAGE = "page"  # one page edited by K editors
    SILENCE = "silence"  # one wiki without a single event (what a broken feed looks like)


@dataclass(frozen=True)
class Burst:
    """Extra events on top of the base stream, from ``at`` (after the stream's start) on."""

    kind: BurstKind
    wiki: str
    at: timedelta
    duration: timedelta
    #: WIKI: the wiki's rate times this (> 1). PAGE, SILENCE: ignored.
    multiplier: float = 1.0
    #: PAGE: the page, its distinct editors and its edits in the burst: exactly these, spread
    #: evenly over the burst, the editors in turn (:meth:`SyntheticStream._page_edit`).
    title: str = ""
    editors: int = 0
    edits: int = 0

    def __post_init__(self) -> None:
        if self.wiki not in WIKI_INDEX:
            raise ValueError(f"burst: unknown wiki {self.wiki!r} (one of {', '.join(WIKI_INDEX)})")
        if self.duration <= timedelta(0) or self.at < timedelta(0):
            raise ValueError("burst: the duration must be positive and the start not negative")
        if self.kind is BurstKind.WIKI and self.multiplier <= 1:
            raise ValueError("burst: a wiki burst needs a multiplier above 1")
        if self.kind is BurstKind.PAGE and not (self.title and 1 <= self.editors <= self.edits):
            raise ValueError("burst: a page burst needs a title and 1 <= editors <= edits")

    def extra_rate(self, base_rate: float) -> float:
        """Events per second this burst adds while it lasts (a silence: takes away)."""
        if self.kind is BurstKind.WIKI:
            return (self.multiplier - 1) * base_rate * WIKI_SHARE[self.wiki]
        if self.kind is BurstKind.SILENCE:
            return -base_rate * WIKI_SHARE[self.wiki]
        return self.edits / self.duration.total_seconds()

    def label(self, start: datetime) -> dict[str, Any]:
        """The side file's record of this burst (times absolute, ISO-8601 UTC)."""
        record: dict[str, Any] = {
            "kind": self.kind.value,
            "wiki": self.wiki,
            "start": iso(start + self.at),
            "end": iso(start + self.at + self.duration),
        }
        if self.kind is BurstKind.WIKI:
            record["multiplier"] = self.multiplier
        elif self.kind is BurstKind.PAGE:
            record.update(title=self.title, editors=self.editors, edits=self.edits)
        return record
