"""Real recorded recentchange events (../shared/data/recentchange, see its README)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_EVENTS = ROOT.parent / "shared" / "data" / "recentchange"

CURRENT = "viniciusvdias-pdm-g10-wikimedia-recentchange-sample.ndjson"  # 384 events, 2026
LEGACY_BATCH = "Wikidata-editgroups-one_qs_batch.ndjson"  # 3818 events, 2018
LEGACY_FIXTURES = "Wikidata-editgroups-small-testdata-fixtures.ndjson"  # 9 events
LEGACY_SINGLE = "cjmatta-kafka-connect-sse-recentchange.ndjson"  # 1 event, schema 2
ALL_FILES = (CURRENT, LEGACY_BATCH, LEGACY_FIXTURES, LEGACY_SINGLE)


@cache
def lines(name: str) -> tuple[bytes, ...]:
    """The events of one file, each line's bytes verbatim (without the newline)."""
    path = SHARED_EVENTS / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the tests read the recorded events from shared/ beside the "
            "checkout (see DEVELOPERS' brief)"
        )
    return tuple(line for line in path.read_bytes().split(b"\n") if line.strip())


def line(name: str, number: int) -> bytes:
    """The event on 1-based line ``number``."""
    return lines(name)[number - 1]
