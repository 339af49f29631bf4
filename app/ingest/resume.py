"""Where the stream resumes after a reconnect: the newest event that is durable in the raw topic
together with every event received before it.

Events go to the raw partition of their ``meta.id``, and deliveries to different partitions
complete in any order (a partition whose leader moves waits while the others go on). Resuming
after the last delivery to complete would skip an event still in flight to another partition,
or serve again one already written; so the point only moves over a gap-free prefix of what was
sent. A failed delivery stops it until the next connection, which resumes before that event.

Every raw record carries the point as it stood when the record was sent (:class:`Durable`, in
the ``resume-id`` and ``resume-time`` headers), so that a worker taking the stream over from a
dead one resumes from the newest record's point: its own SSE id would skip an event the dead
worker still had in flight to another partition. The records already written after that point
are not written again (:attr:`Takeover.written`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Durable:
    """A resume point: the SSE id to send as Last-Event-ID (None: none yet, the stream starts
    at ``ingestion.since``) and when its raw record was sent (epoch ms; 0 with no id)."""

    id: str | None = None
    time_ms: int = 0


@dataclass(frozen=True)
class Takeover:
    """Where a worker taking the stream over resumes, and the SSE ids of the records already in
    the raw log after that point (their events are served again: each is skipped once)."""

    point: Durable = Durable()
    written: frozenset[str] = frozenset()


class ResumePoint:
    def __init__(self, start: Durable) -> None:
        self._point = start
        #: The first failed delivery since the last reset, if any.
        self.failure: BaseException | None = None
        self._sent = 0  # sequence number of the next event sent
        self._first_pending = 0  # the lowest sequence number not yet durable
        self._completed: dict[int, Durable | None] = {}  # durable, after a pending one

    @property
    def id(self) -> str | None:
        """The SSE id to send as Last-Event-ID (None: none yet)."""
        return self._point.id

    @property
    def point(self) -> Durable:
        return self._point

    def sent(self) -> int:
        """A number for the event being sent, in the order received."""
        sequence = self._sent
        self._sent += 1
        return sequence

    def delivered(self, sequence: int, sse_id: str | None, time_ms: int = 0) -> None:
        """Event ``sequence`` (SSE id ``sse_id``, its record sent at ``time_ms``) is durable."""
        if self.failure is not None:
            return  # the point stays before the failed event
        self._completed[sequence] = None if sse_id is None else Durable(sse_id, time_ms)
        while self._first_pending in self._completed:
            durable = self._completed.pop(self._first_pending)
            if durable is not None:
                self._point = durable
            self._first_pending += 1

    def failed(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error

    def reset(self) -> None:
        """A new connection (every earlier delivery has completed): it resumes after
        :attr:`id`, so what was sent before counts no more."""
        self.failure = None
        self._completed.clear()
        self._first_pending = self._sent
