"""Events the tests make themselves: the synthetic stream (infra/replay/synthetic.py).

Real recordings are read only by the ``recorded`` layer (tests/recorded/). Small events for one
test are written by hand in that test, in the schema's shape and our own words.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from app.contract import UserKind
from infra.replay.synthetic import Label, StreamOptions, SyntheticStream
from infra.replay.world import EditorKind

#: The typed event's user_kind for each kind of editor the generator meant (written here, not
#: taken from the normalizer, so that tests compare the two).
USER_KIND_OF_EDITOR = {
    EditorKind.BOT: UserKind.BOT,
    EditorKind.ANONYMOUS_V4: UserKind.ANONYMOUS,
    EditorKind.ANONYMOUS_V6: UserKind.ANONYMOUS,
    EditorKind.TEMPORARY: UserKind.TEMPORARY,
    EditorKind.HIDDEN: UserKind.HIDDEN,
    EditorKind.REGISTERED: UserKind.REGISTERED,
}


def stream(
    *,
    seed: int = 11,
    start: datetime | None = None,
    duplicate_rate: float = 0.0,
    canary_interval: timedelta | None = None,
    **options: Any,
) -> SyntheticStream:
    """A synthetic stream for a test: by default every event a change, all ``meta.id``s distinct
    (no repeats, no canaries) and times "now"."""
    return SyntheticStream(
        StreamOptions(
            seed=seed,
            start=start,
            duplicate_rate=duplicate_rate,
            canary_interval=canary_interval,
            **options,
        )
    )


def synthetic(count: int, **options: Any) -> list[bytes]:
    """``count`` synthetic payloads (see :func:`stream` for the options)."""
    return list(stream(**options).events(count))


def labelled(count: int, **options: Any) -> list[tuple[Label, bytes]]:
    """``count`` (label, payload) pairs: what each event was made to be, and its bytes."""
    return stream(**options).labelled(count)


def changes(events: list[bytes]) -> dict[str, None]:
    """The ids of the changes among ``events`` as a typed topic must hold them: no canary, each
    once, in the order first served."""
    ids: dict[str, None] = {}
    for line in events:
        meta = orjson.loads(line)["meta"]
        if meta["domain"] != "canary":
            ids.setdefault(meta["id"])
    return ids
