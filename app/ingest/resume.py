"""Where the stream resumes after a reconnect: the newest event that is durable in the raw topic
together with every event received before it.

Events go to the raw partition of their ``meta.id``, and deliveries to different partitions
complete in any order (a partition whose leader moves waits while the others go on). Resuming
after the last delivery to complete would skip an event still in flight to another partition,
or serve again one already written; so the point only moves over a gap-free prefix of what was
sent. A failed delivery stops it until the next connection, which resumes before that event.
"""

from __future__ import annotations


class ResumePoint:
    def __init__(self, resume_id: str | None) -> None:
        #: The SSE id to send as Last-Event-ID (None: none yet).
        self.id = resume_id
        #: The first failed delivery since the last reset, if any.
        self.failure: BaseException | None = None
        self._sent = 0  # sequence number of the next event sent
        self._first_pending = 0  # the lowest sequence number not yet durable
        self._completed: dict[int, str | None] = {}  # durable, after a pending one

    def sent(self) -> int:
        """A number for the event being sent, in the order received."""
        sequence = self._sent
        self._sent += 1
        return sequence

    def delivered(self, sequence: int, sse_id: str | None) -> None:
        """Event ``sequence`` (SSE id ``sse_id``) is durable."""
        if self.failure is not None:
            return  # the point stays before the failed event
        self._completed[sequence] = sse_id
        while self._first_pending in self._completed:
            durable = self._completed.pop(self._first_pending)
            if durable is not None:
                self.id = durable
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
