"""What the benchmarks measure on: the synthetic stream by default, or a user's recording.

A recording (``--recording FILE.ndjson``, e.g. one made with ``./infra/wikipulse record``) is
cycled with a fresh ``meta.id`` per copy, so that no event is a duplicate of another.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import orjson

from infra.replay.synthetic import StreamOptions, SyntheticStream

#: Legacy envelopes are rare live but the normalizer handles both: measure a mix.
LEGACY_SHARE = 0.1


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recording",
        type=Path,
        metavar="FILE",
        help="measure on this NDJSON recording (default: the synthetic stream, seed 7)",
    )


def describe(recording: Path | None) -> str:
    return f"recording {recording}" if recording else "synthetic stream (seed 7)"


def events(count: int, recording: Path | None = None) -> list[bytes]:
    """``count`` payloads, every ``meta.id`` distinct."""
    if recording is None:
        options = StreamOptions(
            seed=7, legacy_share=LEGACY_SHARE, duplicate_rate=0.0, canary_interval=None
        )
        return list(SyntheticStream(options).events(count))
    source = [line for line in recording.read_bytes().split(b"\n") if line.strip()]
    if not source:
        raise SystemExit(f"{recording} holds no event")
    out = source[:count]
    for index in range(len(out), count):
        event = orjson.loads(source[index % len(source)])
        event["meta"]["id"] = str(uuid.uuid4())
        out.append(orjson.dumps(event))
    return out
