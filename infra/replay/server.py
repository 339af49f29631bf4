"""Serve ``recentchange`` events over SSE, the way Wikimedia EventStreams does.

A test double and a development tool: ``python -m infra.replay serve [FILE.ndjson]`` serves a
recording (one event per line) or, without a file, the synthetic stream (synthetic.py) at
``/v2/stream/recentchange``, paced by event time (``--speed``), at a fixed rate (``--rate``,
for load) or as fast as possible (``--fast``), and can misbehave on purpose (drop connections,
answer 429/503, send malformed frames) so that the SSE client's resilience can be exercised.

The wire format follows EventStreams: a ``:ok`` comment first, then for each event
``event: message`` / ``id: <json array>`` / ``data: <json>`` and a blank line. The id is a
Wikimedia-shaped array whose ``eqiad`` entry holds the event's *position* in the (looped)
sequence as its ``offset``::

    [{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":41},
     {"topic":"codfw.mediawiki.recentchange","partition":0,"offset":-1}]

so ``Last-Event-ID`` resumes right after that event. A timestamp-based id as Wikimedia sends
them (``"timestamp": <epoch ms>`` instead of ``offset``) resumes by time, like ``?since=``
(epoch milliseconds or an ISO-8601 time): at the first event whose ``meta.dt`` (else
``timestamp``) is at or after it. ``Last-Event-ID`` wins over ``since``; a value that cannot
be parsed is answered with HTTP 400.

Positions are stable: the same position always carries the same bytes. A live synthetic
stream sends each event when its time comes and, with no resume point, starts now. The first
pass over a recording is sent byte for byte; in ``loop`` mode later passes get a new
``meta.id`` (a version 4 UUID derived from a per-server random seed and the position) and
``meta.dt`` / ``timestamp`` shifted by (time the pass started - time of the first recorded
event), so they look current.
Malformed frames (``malformed_every``) take positions of their own and never replace an event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from infra.replay.sources import EventSource, RecordedEvents, SyntheticEvents
from infra.replay.wire import (
    CONTENT_TYPE,
    STREAM_PATH,
    BadRequestError,
    parse_last_event_id,
    parse_since,
    sse_frame,
)

logger = logging.getLogger(__name__)


@dataclass
class ReplayOptions:
    """How the replay server behaves (defaults: a well-behaved, finite, fast stream)."""

    #: None: as fast as possible; 1.0: the recorded gaps (``meta.dt``/``timestamp``); N: N× faster.
    speed: float | None = None
    #: Events per second, evenly spaced (recorded gaps ignored); overrides ``speed``.
    rate: float | None = None
    #: After the last event start again, with fresh ``meta.id`` and current times.
    loop: bool = False
    #: Abort the TCP connection (no clean chunked end) after every N frames on a connection.
    drop_every: int | None = None
    #: Every Nth frame is a malformed payload (truncated JSON / invalid UTF-8), own id.
    malformed_every: int | None = None
    #: Answer the first N connection attempts with ``fail_status``.
    fail_first: int = 0
    fail_status: int = 503
    #: ``Retry-After`` (seconds) on those answers.
    retry_after: int | None = None
    #: Send ``retry: <ms>`` at the start of each stream.
    retry_ms: int | None = None
    #: At the end of a finite recording keep the connection open and silent (a quiet live
    #: stream) instead of ending the response.
    hold_open: bool = False

    def __post_init__(self) -> None:
        if self.speed is not None and self.speed <= 0:
            raise ValueError("speed must be positive (or None for as fast as possible)")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.drop_every is not None and self.drop_every < 1:
            raise ValueError("drop_every must be at least 1")
        if self.malformed_every is not None and self.malformed_every < 2:
            raise ValueError("malformed_every must be at least 2")
        if self.fail_first < 0:
            raise ValueError("fail_first must not be negative")
        if not 400 <= self.fail_status <= 599:
            raise ValueError("fail_status must be an HTTP error status")


class _Sequence:
    """Maps stream positions to payloads: the source's events and malformed frames."""

    def __init__(self, source: EventSource, options: ReplayOptions) -> None:
        self.source = source
        self.options = options

    def is_malformed(self, position: int) -> bool:
        every = self.options.malformed_every
        return every is not None and (position + 1) % every == 0

    def ordinal(self, position: int) -> int:
        """The number of real events before ``position``."""
        every = self.options.malformed_every
        return position - position // every if every else position

    def position_of(self, ordinal: int) -> int:
        """The position of the ``ordinal``-th real event."""
        every = self.options.malformed_every
        return ordinal + ordinal // (every - 1) if every else ordinal

    def end(self) -> int | None:
        """The first position after the last event (None: without end)."""
        count = self.source.count
        return None if count is None else self.position_of(count)

    def start_for_time(self, moment: datetime) -> int:
        return self.position_of(self.source.ordinal_at(moment))

    def payload(self, position: int) -> tuple[bytes, int | None]:
        """(payload, ordinal of the event, or None for a malformed frame)."""
        ordinal = self.ordinal(position)
        if self.is_malformed(position):
            return self._malformed(position, self.source.event(ordinal, position)), None
        return self.source.event(ordinal, position), ordinal

    def _malformed(self, position: int, upcoming: bytes) -> bytes:
        """Alternately: the upcoming event's JSON truncated; the same plus invalid UTF-8."""
        half = upcoming[: max(1, len(upcoming) // 2)]
        kind = position // (self.options.malformed_every or 1)
        return half if kind % 2 else half + b"\xff\xfe\xfd"


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass
class _Observations:
    connections: int = 0
    requests: list[tuple[str | None, str]] = field(default_factory=list)
    user_agents: list[str | None] = field(default_factory=list)
    events_sent: int = 0
    active: int = 0
    max_active: int = 0


def pace(
    latest: tuple[int, datetime] | None, paced: tuple[int, datetime] | None, speed: float | None
) -> tuple[float, tuple[int, datetime] | None]:
    """Seconds to sleep before sending an event recorded at ``paced`` (pass, time) when events up
    to ``latest`` have gone, and the new latest. A recording is not in time order (EventStreams
    merges two datacenters; a repeat carries its original's time): an older event goes at once
    and leaves the latest where it was, so a pass lasts its span of event time / ``speed``."""
    if paced is None:
        return 0.0, latest
    if latest is None or latest[0] != paced[0]:
        return 0.0, paced  # the first event of a pass: gaps are only slept within one
    if paced[1] <= latest[1]:
        return 0.0, latest
    wait = 0.0 if speed is None else (paced[1] - latest[1]).total_seconds() / speed
    return wait, paced


class ReplayServer:
    """An aiohttp server replaying ``events`` (one payload each) as EventStreams does."""

    def __init__(
        self, events: Sequence[bytes] | EventSource, options: ReplayOptions | None = None
    ) -> None:
        self.options = options or ReplayOptions()
        source = (
            events
            if isinstance(events, RecordedEvents | SyntheticEvents)
            else RecordedEvents(events, loop=self.options.loop)
        )
        self._sequence = _Sequence(source, self.options)
        self._seen = _Observations()
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.url: str | None = None

    @classmethod
    def from_ndjson(cls, path: Path, options: ReplayOptions | None = None) -> ReplayServer:
        """One event per non-empty line of ``path``, bytes verbatim (line end removed)."""
        lines = path.read_bytes().split(b"\n")
        return cls([line.removesuffix(b"\r") for line in lines if line.strip()], options)

    # Observability (tests) -------------------------------------------------------------------

    @property
    def event_count(self) -> int | None:
        """Events in one pass of a recording, or of a finite synthetic stream (else None)."""
        source = self._sequence.source
        return len(source.events) if isinstance(source, RecordedEvents) else source.count

    @property
    def connections(self) -> int:
        """Connection attempts to the stream endpoint so far."""
        return self._seen.connections

    @property
    def requests(self) -> list[tuple[str | None, str]]:
        """(Last-Event-ID header or None, query string) of each connection attempt."""
        return self._seen.requests

    @property
    def user_agents(self) -> list[str | None]:
        """The User-Agent header of each connection attempt."""
        return self._seen.user_agents

    @property
    def events_sent(self) -> int:
        """Frames written (events and malformed frames), over all connections."""
        return self._seen.events_sent

    @property
    def active(self) -> int:
        """Stream requests being handled right now."""
        return self._seen.active

    @property
    def max_active(self) -> int:
        """The most stream requests ever handled at the same time."""
        return self._seen.max_active

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: a free port); return the stream URL."""
        app = web.Application()
        app.router.add_get(STREAM_PATH, self._stream)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}{STREAM_PATH}"
        return self.url

    async def stop(self) -> None:
        """Cut every open stream and stop listening."""
        for task in list(self._handlers):
            task.cancel()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # The endpoint -----------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        seen = self._seen
        last_event_id = request.headers.get("Last-Event-ID")
        seen.connections += 1
        seen.requests.append((last_event_id, request.query_string))
        seen.user_agents.append(request.headers.get("User-Agent"))
        seen.active += 1
        seen.max_active = max(seen.max_active, seen.active)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if seen.connections <= self.options.fail_first:
                return self._failure()
            try:
                start = self._start_position(last_event_id, request.query.get("since"))
            except BadRequestError as error:
                return web.json_response(
                    {"status": 400, "type": "bad_request", "detail": str(error)}, status=400
                )
            return await self._send(request, start)
        finally:
            seen.active -= 1
            if task is not None:
                self._handlers.discard(task)

    def _failure(self) -> web.Response:
        headers = {}
        if self.options.retry_after is not None:
            headers["Retry-After"] = str(self.options.retry_after)
        return web.json_response(
            {"status": self.options.fail_status, "detail": "replay: failing on purpose"},
            status=self.options.fail_status,
            headers=headers,
        )

    def _start_position(self, last_event_id: str | None, since: str | None) -> int:
        if last_event_id is not None:
            resume = parse_last_event_id(last_event_id)
        elif since is not None:
            resume = parse_since(since)
        else:
            # Like EventStreams: a live stream starts now, a recording at its beginning.
            return (
                self._sequence.start_for_time(datetime.now(UTC))
                if self._sequence.source.live
                else 0
            )
        start = self._sequence.start_for_time(resume) if isinstance(resume, datetime) else resume
        source = self._sequence.source
        if isinstance(source, SyntheticEvents) and source.live:
            oldest = self._sequence.position_of(source.oldest())
            if start < oldest:
                logger.info(
                    "replay: resuming at %d, the start of the backlog, not %d", oldest, start
                )
                return oldest
        return start

    async def _send(self, request: web.Request, start: int) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        opening = b":ok\n\n"
        if self.options.retry_ms is not None:
            opening += b"retry: %d\n\n" % self.options.retry_ms
        await response.write(opening)
        sequence = self._sequence
        end = sequence.end()
        sent_here = 0
        latest: tuple[int, datetime] | None = None  # (pass, latest recorded time sent)
        position = start
        rate = self.options.rate
        clock = asyncio.get_running_loop().time
        started = clock()
        while end is None or position < end:
            data, index = sequence.payload(position)
            if rate is not None:
                # A deadline per event: bursts after each sleep keep the mean rate exact.
                delay = started + sent_here / rate - clock()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            elif index is not None:
                latest = await self._pace(latest, index)
            await response.write(sse_frame(position, data))
            sent_here += 1
            self._seen.events_sent += 1
            position += 1
            if self.options.drop_every is not None and sent_here % self.options.drop_every == 0:
                logger.info("replay: dropping the connection after %d frames", sent_here)
                if request.transport is not None:
                    request.transport.abort()
                return response
            unpaced = self.options.speed is None or sequence.source.live  # e.g. a backlog
            if unpaced or (rate is not None and sent_here % 64 == 0):
                await asyncio.sleep(0)  # let the client (often in the same loop) read
        if self.options.hold_open:
            await asyncio.Event().wait()  # until the client leaves or the server stops
        await response.write_eof()
        return response

    async def _pace(
        self, latest: tuple[int, datetime] | None, ordinal: int
    ) -> tuple[int, datetime] | None:
        """Sleep for the gap to this event (scaled by speed), or, for a live source, until its
        time; the new (pass, latest recorded time sent)."""
        source = self._sequence.source
        paced = source.pace_time(ordinal)
        speed = self.options.speed
        if paced is not None and source.live:
            # By the wall clock, whatever the speed: an event never leaves before its time.
            while (wait := (paced[1] - datetime.now(UTC)).total_seconds()) > 0:
                await asyncio.sleep(wait)
            return paced
        wait, latest = pace(latest, paced, speed)
        if wait > 0:
            await asyncio.sleep(wait)
        return latest
