"""Where the ``recorded`` layer finds real recordings: NDJSON files of EventStreams payloads.

``WIKIPULSE_RECORDINGS`` names a directory (every ``*.ndjson`` in it is one recording); without
it, ``../shared/data/recentchange`` beside the checkout when it exists. Make your own with
``./infra/wikipulse record``. The recordings are read at run time and never copied into the
repository.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = "WIKIPULSE_RECORDINGS"
DEFAULT_DIR = ROOT.parent / "shared" / "data" / "recentchange"
HOW_TO = (
    f"set {ENV} to a directory of NDJSON recordings, or make one with "
    "`./infra/wikipulse record --minutes 5 --out DIR/live.ndjson`"
)


#: The official recentchange JSON Schemas (Wikimedia's schema repositories), for the recorded
#: layer's check of the synthetic events: ``WIKIPULSE_SCHEMAS``, else ``../shared/data/schemas``.
SCHEMAS_ENV = "WIKIPULSE_SCHEMAS"
DEFAULT_SCHEMAS_DIR = ROOT.parent / "shared" / "data" / "schemas"


def schemas_dir() -> Path | None:
    """The schemas' directory; None when not configured and not beside the checkout. A
    configured directory is returned even when missing, so its tests fail rather than skip."""
    configured = os.environ.get(SCHEMAS_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return DEFAULT_SCHEMAS_DIR if DEFAULT_SCHEMAS_DIR.is_dir() else None


class RecordingsError(Exception):
    """WIKIPULSE_RECORDINGS names something that holds no recording."""


def required() -> bool:
    """Whether the user asked for the recorded layer (then it must run)."""
    return bool(os.environ.get(ENV))


@cache
def recordings_dir() -> Path | None:
    """The directory of recordings, or None when there is none to use."""
    configured = os.environ.get(ENV)
    if configured:
        path = Path(configured).expanduser().resolve()
        if not path.is_dir() or not any(path.glob("*.ndjson")):
            raise RecordingsError(f"{ENV}={configured}: no directory with *.ndjson files there")
        return path
    return DEFAULT_DIR if DEFAULT_DIR.is_dir() and any(DEFAULT_DIR.glob("*.ndjson")) else None


def recording_files() -> list[Path]:
    """Every recording, sorted by name (empty without a directory)."""
    directory = recordings_dir()
    return [] if directory is None else sorted(directory.glob("*.ndjson"))


@cache
def lines(path: Path) -> tuple[bytes, ...]:
    """The events of one recording: each non-empty line's bytes verbatim (no line end)."""
    return tuple(
        line.removesuffix(b"\r") for line in path.read_bytes().split(b"\n") if line.strip()
    )
