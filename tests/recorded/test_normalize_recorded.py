"""normalize() over every real recording: each event's outcome (typed with every field, a canary,
or rejected with its reason code and field) is the one the rules written out in plain Python
give (tests/normalize_rules.py).

Works on any recording: expectations come from each line itself, never from a file's name or
counts. Hand-written and synthetic events: tests/app/test_normalize*.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.contract import Canary, RecentChange
from app.normalize import Rejected, normalize
from tests.normalize_rules import expected_outcome
from tests.recordings import lines

#: Every recording was received before this run started.
RECEIVED = datetime.now(UTC)
#: How many mismatches a failure lists.
SHOWN = 20


def each_event(recordings: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(``file:line``, payload) for every event of every recording."""
    for path in recordings:
        for number, data in enumerate(lines(path), start=1):
            yield f"{path.name}:{number}", data


def outcome(data: bytes) -> tuple[Any, ...]:
    try:
        result = normalize(data, received_at=RECEIVED)
    except Rejected as rejection:
        assert rejection.detail, rejection
        return ("rejected", rejection.code, rejection.field)
    if isinstance(result, Canary):
        return ("canary", result.emitted_at)
    assert type(result) is RecentChange
    return ("typed", result.model_dump())


def with_types(result: tuple[Any, ...]) -> tuple[Any, ...]:
    """Typed values with their types: True == 1, yet a count must not be a bool."""
    if result[0] != "typed":
        return result
    return ("typed", {name: (type(value), value) for name, value in result[1].items()})


def test_every_recorded_event_has_the_outcome_the_rules_give(recordings: list[Path]) -> None:
    problems, kinds = [], {"typed": 0, "canary": 0, "rejected": 0}
    for where, data in each_event(recordings):
        actual, expected = outcome(data), expected_outcome(data, received_at=RECEIVED)
        kinds[actual[0]] += 1
        if with_types(actual) != with_types(expected):
            problems.append(f"{where}: normalize() gives {actual!r}, the rules {expected!r}")
    assert not problems, "\n".join(problems[:SHOWN]) + (
        f"\n... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    )
    assert kinds["typed"], f"no recorded event became a typed event: {kinds}"
