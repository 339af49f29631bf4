"""What the replay server serves, by stream position: a recording (looped passes get fresh ids
and current times) or the synthetic stream (live, or at a given start)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from infra.replay.synthetic import SyntheticStream
from infra.replay.wire import event_time, rewrite_event


class RecordedEvents:
    """The events of a recording; in ``loop`` mode later passes get fresh ids and current times."""

    live = False

    def __init__(self, events: Sequence[bytes], *, loop: bool = False) -> None:
        # No events is allowed: a stream that only says ":ok" (then ends, or stays silent).
        self.events = list(events)
        self.loop = loop
        self._seed = uuid.uuid4().hex
        known = [event_time(data) for data in self.events]
        self.first_time = next((t for t in known if t is not None), None)
        # Unknown times take the previous event's (pacing: no gap; since: same place).
        self.times: list[datetime | None] = []
        previous = self.first_time
        for moment in known:
            previous = moment or previous
            self.times.append(previous)
        self._shifts: dict[int, timedelta] = {}

    @property
    def count(self) -> int | None:
        """Events in the whole stream (None: without end)."""
        return None if self.loop and self.events else len(self.events)

    def event(self, ordinal: int, position: int) -> bytes:
        pass_number, index = divmod(ordinal, len(self.events))
        data = self.events[index]
        if pass_number == 0:
            return data
        new_id = uuid.UUID(
            bytes=hashlib.blake2b(f"{self._seed}:{position}".encode(), digest_size=16).digest(),
            version=4,
        )
        return rewrite_event(data, new_id=str(new_id), shift=self._shift(pass_number))

    def pace_time(self, ordinal: int) -> tuple[int, datetime] | None:
        """(pass, recorded time): gaps are only slept within one pass."""
        pass_number, index = divmod(ordinal, len(self.events))
        moment = self.times[index]
        return None if moment is None else (pass_number, moment)

    def ordinal_at(self, moment: datetime) -> int:
        """The first recorded event at or after ``moment``."""
        for index, when in enumerate(self.times):
            if when is not None and when >= moment:
                return index
        return len(self.events)

    def _shift(self, pass_number: int) -> timedelta:
        if pass_number not in self._shifts:
            first = self.first_time
            self._shifts[pass_number] = datetime.now(UTC) - first if first else timedelta(0)
        return self._shifts[pass_number]


class SyntheticEvents:
    """The synthetic stream (infra/replay/synthetic.py), endless or ``count`` events long.

    ``live``: each event is sent when its event time comes (times are "now"); a client resuming
    from an older position gets the backlog at once, then the live pace, as from EventStreams.
    Like EventStreams, which keeps a few days, a live stream keeps ``backlog`` of history: a
    client resuming from further back starts at its beginning (after a day of ``down``, an hour
    of events, not 3.5 million).
    """

    #: How far back a client may resume a live stream.
    BACKLOG = timedelta(hours=1)

    def __init__(
        self,
        stream: SyntheticStream,
        *,
        count: int | None = None,
        live: bool,
        backlog: timedelta = BACKLOG,
    ) -> None:
        self.stream = stream
        self.count = count
        self.live = live
        self.backlog = backlog

    def oldest(self) -> int:
        """The first ordinal a client may resume at (0 unless live)."""
        if not self.live:
            return 0
        return self.ordinal_at(datetime.now(UTC) - self.backlog)

    def event(self, ordinal: int, position: int) -> bytes:
        return self.stream.event(ordinal)

    def pace_time(self, ordinal: int) -> tuple[int, datetime] | None:
        return 0, self.stream.time(ordinal)

    def ordinal_at(self, moment: datetime) -> int:
        """The first event whose ``meta.dt`` is at or after ``moment``.

        Every ``meta.dt`` is at or before its slot time (cut to milliseconds, or to seconds in
        the legacy envelope; a repeat carries its original's), so no event before the first
        slot at ``moment`` qualifies: scan on from there (one earlier, for rounding).
        """
        ordinal = max(0, self.stream.position_at(moment) - 1)
        while self.count is None or ordinal < self.count:
            when = event_time(self.stream.event(ordinal))
            if when is not None and when >= moment:
                return ordinal
            ordinal += 1
        return ordinal


EventSource = RecordedEvents | SyntheticEvents
