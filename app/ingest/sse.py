"""A resilient reader of a Server-Sent Events stream (Wikimedia EventStreams).

:class:`SseSource` wraps aiohttp-sse-client's ``EventSource`` in a loop of our own: one
connection at a time, every (re)connection resumes from the id the caller says it stored last
(``Last-Event-ID``), falls back to ``?since=`` only when there is no such id, and waits with
capped exponential backoff and full jitter between attempts.

How the library is tamed (aiohttp-sse-client 0.2.1, unmaintained):

* Its own reconnection is switched off. ``max_connect_retry=0`` makes a failed connect raise at
  once, and :class:`_OneShotEventSource` replaces its read loop (``__anext__``), which after a
  clean end of stream would sleep an uncapped, doubling time and reconnect by itself. Here the
  end of the stream simply ends the iteration and our loop decides what to do.
* A fresh ``EventSource`` per connection, so a half-received event of a dropped connection can
  never be glued to the first event of the next one, and a fresh headers mapping per
  connection (the library writes ``Accept`` and ``Cache-Control`` into it).
* The library decodes each line with strict UTF-8, so one invalid byte would raise
  ``UnicodeDecodeError`` out of the iterator and lose the frame. Our read loop decodes with
  ``surrogateescape`` and :attr:`SseEvent.data` re-encodes the same way: the payload bytes
  arrive exactly as sent, invalid UTF-8 included, and the worker decides (dead letter).
* On an HTTP error the library raises a bare ``ConnectionError`` and drops the response, so the
  status and ``Retry-After`` are read from an aiohttp ``TraceConfig`` on our own session, and
  that response is closed here.

Between attempts it waits as :mod:`app.ingest.reconnect` says. Before each wait
:attr:`SseSource.last_failure` says why the connection failed or ended (a reason of
:data:`~app.ingest.reconnect.RECONNECT_REASONS` and a sentence a person can act on: connection
refused, DNS, TLS, an HTTP status), when, and when the next attempt is due: the worker's
``/health`` shows it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from types import SimpleNamespace
from typing import Any, Final

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp_sse_client.client import EventSource, MessageEvent
from multidict import CIMultiDict
from yarl import URL

from app.ingest.reconnect import (
    SERVER_WAIT_CAP_FACTOR,
    THROTTLE_FACTOR,
    ReconnectReason,
    StreamFailure,
    address,
    backoff_delay,
    connect_error_message,
    describe,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

#: The event types that are yielded ("" is the SSE default type, i.e. "message").
MESSAGE_TYPES: Final = frozenset({"", "message"})

#: Longest SSE line accepted (aiohttp's reader allows lines up to twice ``read_bufsize``).
MAX_LINE_BYTES: Final = 16 * 1024 * 1024  # above kafka.max_message_bytes: the worker decides


@dataclass(frozen=True)
class SseEvent:
    """One SSE event as received."""

    #: The SSE ``id:`` field, verbatim (Wikimedia: a JSON array string); per the SSE rules an
    #: event without ``id:`` carries the last id seen on the same connection, None if none.
    id: str | None
    #: The ``data:`` payload as UTF-8 bytes exactly as received (invalid UTF-8 included).
    data: bytes
    #: The SSE event type: always "message" (other types are not yielded).
    event: str
    #: When the client got it (UTC).
    received_at: datetime


def user_agent(contact: str) -> str:
    """The User-Agent Wikimedia asks for: ``wikipulse/<v> (<contact>) aiohttp/<v>``."""
    try:
        version = metadata.version("wikipulse")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    return f"wikipulse/{version} ({contact}) aiohttp/{aiohttp.__version__}"


class _OneShotEventSource(EventSource):  # type: ignore[misc]  # the library is untyped
    """aiohttp-sse-client's ``EventSource`` for exactly one connection.

    ``connect()``, the request headers, the status / content-type checks and the event
    dispatch are the library's. The read loop is ours: it decodes lines with
    ``surrogateescape`` (so undecodable bytes survive the round trip), strips exactly one
    space after the colon (as the SSE specification says), records ``retry:`` for our own
    loop instead of the library's reconnection timer, and ends the iteration at the end of
    the stream instead of reconnecting.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_ms: int | None = None

    async def __anext__(self) -> MessageEvent:
        response = self._response
        if response is None:
            raise StopAsyncIteration
        async for raw in response.content:
            line = raw.decode("utf-8", "surrogateescape").rstrip("\n").rstrip("\r")
            if line == "":
                event = self._dispatch_event()
                if event is not None:
                    return event
                continue
            if line.startswith(":"):
                continue  # comment / heartbeat
            name, _, value = line.partition(":")
            self._process_field(name, value.removeprefix(" "))
        raise StopAsyncIteration  # end of stream: a half-received event is discarded

    def _process_field(self, field_name: str, field_value: str) -> None:
        if field_name == "retry":
            if field_value.isascii() and field_value.isdigit():
                self.retry_ms = int(field_value)
            return
        super()._process_field(field_name, field_value)


@dataclass
class _Attempt:
    """What happened on one connection attempt (also the aiohttp trace request context)."""

    response: aiohttp.ClientResponse | None = None
    events: int = 0
    reason: ReconnectReason = "ended"
    detail: str = ""
    retry_after: float | None = None


async def _remember_response(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    """Trace hook: keep the response so that status and Retry-After survive the library."""
    attempt = getattr(context, "trace_request_ctx", None)
    if isinstance(attempt, _Attempt):
        attempt.response = params.response


class _Run:
    """One iteration of :meth:`SseSource.events`: its session and its current connection."""

    def __init__(self, timeout: aiohttp.ClientTimeout) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(_remember_response)
        self.session = aiohttp.ClientSession(
            timeout=timeout, read_bufsize=MAX_LINE_BYTES // 2, trace_configs=[trace]
        )
        self.attempt: _Attempt | None = None
        self.connected = False
        self.stopped = False
        self.stopping = asyncio.Event()

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the run is closed."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def close(self, why: str) -> None:
        """Stop: wake a reader waiting for data, then close the session."""
        self.stopped = True
        self.stopping.set()
        self.connected = False
        attempt = self.attempt
        if attempt is not None and attempt.response is not None:
            # Closing aiohttp's connection detaches the reader without waking it: wake it.
            attempt.response.content.set_exception(aiohttp.ClientConnectionError(why))
        await self.session.close()


class SseSource:
    """An endless stream of :class:`SseEvent`, reconnecting and resuming by itself.

    ``resume_id`` is awaited before every connection: it returns the id of the last event the
    caller has stored (sent as ``Last-Event-ID``) or None, in which case ``since`` (if set) is
    added to the URL. ``on_reconnect(reason)`` is called before each wait, with a reason from
    :data:`~app.ingest.reconnect.RECONNECT_REASONS`; ``on_connect()`` after each successful
    connection.
    """

    def __init__(
        self,
        url: str,
        *,
        user_agent: str,
        read_timeout: float = 60.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        since: str | None = None,
        resume_id: Callable[[], Awaitable[str | None]],
        on_reconnect: Callable[[str], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if read_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("read_timeout and connect_timeout must be positive")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self._url = URL(url)
        self._user_agent = user_agent
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._since = since
        self._resume_id = resume_id
        self._on_reconnect = on_reconnect
        self._on_connect = on_connect
        self._rng = rng or random.Random()
        self._closed = False
        self._run: _Run | None = None
        self._failures = 0
        self._retry_ms: int | None = None
        self._last_failure: StreamFailure | None = None

    @property
    def connected(self) -> bool:
        """True while a stream is open."""
        return self._run is not None and self._run.connected

    @property
    def last_failure(self) -> StreamFailure | None:
        """How the last connection failed or ended (set before ``on_reconnect`` is called);
        None before the first."""
        return self._last_failure

    async def events(self) -> AsyncGenerator[SseEvent, None]:
        """Yield events forever, reconnecting after any failure.

        One iteration at a time: starting a new iteration (e.g. after the caller's loop
        failed and left the previous one suspended) first closes the previous one's
        connection and session. Ends only when :meth:`close` is called.
        """
        if self._closed:
            raise RuntimeError("SseSource is closed")
        run = _Run(
            aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=self._read_timeout
            )
        )
        previous, self._run = self._run, run
        if previous is not None:
            await previous.close("replaced by a new iteration of events()")
        try:
            while not run.stopped:
                attempt = _Attempt()
                async with aclosing(self._connection(run, attempt)) as stream:
                    async for event in stream:
                        yield event
                if run.stopped:
                    break
                wait = self._wait_after(attempt)
                now = datetime.now(UTC)
                self._last_failure = StreamFailure(
                    reason=attempt.reason,
                    message=attempt.detail,
                    at=now,
                    next_attempt=now + timedelta(seconds=wait),
                    failures=self._failures,
                )
                logger.warning(
                    "SSE stream %s (%s): reconnecting in %.2f s",
                    attempt.reason,
                    attempt.detail,
                    wait,
                )
                if self._on_reconnect is not None:
                    self._on_reconnect(attempt.reason)
                await run.pause(wait)
        finally:
            await run.close("events() ended")
            if self._run is run:
                self._run = None

    async def close(self) -> None:
        """Close the connection and the session; ``events()`` ends without reconnecting.

        Safe to call from another task while ``events()`` is waiting for data. The source
        cannot be iterated again afterwards.
        """
        self._closed = True
        run = self._run
        if run is not None:
            await run.close("closed by SseSource.close()")

    # ----------------------------------------------------------------------------------------
    # One connection
    # ----------------------------------------------------------------------------------------

    async def _request(self) -> tuple[URL, CIMultiDict[str]]:
        """The URL and a fresh headers mapping for the next connection."""
        resume = await self._resume_id()
        headers: CIMultiDict[str] = CIMultiDict({"User-Agent": self._user_agent})
        url = self._url
        if resume is not None:
            headers["Last-Event-ID"] = resume
        elif self._since is not None:
            url = url.update_query(since=self._since)
        logger.debug("connecting to %s (Last-Event-ID %s)", url, resume)
        return url, headers

    async def _connection(self, run: _Run, attempt: _Attempt) -> AsyncGenerator[SseEvent, None]:
        """Open one stream and yield its events; record in ``attempt`` how it ended."""
        url, headers = await self._request()
        if run.stopped:
            return
        run.attempt = attempt
        source = _OneShotEventSource(
            url,
            session=run.session,
            max_connect_retry=0,
            headers=headers,
            trace_request_ctx=attempt,
        )
        try:
            try:
                await source.connect()
            except (aiohttp.ClientError, OSError, TimeoutError, HttpProcessingError) as error:
                self._classify_connect_failure(attempt, error, url)
                return
            run.connected = True
            logger.info("SSE stream connected: %s", url)
            if self._on_connect is not None:
                self._on_connect()
            try:
                async for message in source:
                    if message.message not in MESSAGE_TYPES:
                        continue
                    attempt.events += 1
                    yield SseEvent(
                        id=message.last_event_id or None,
                        data=message.data.encode("utf-8", "surrogateescape"),
                        event="message",
                        received_at=datetime.now(UTC),
                    )
                attempt.reason = "ended"
                attempt.detail = f"{address(url)} ended the stream"
            except TimeoutError:
                attempt.reason = "timeout"
                attempt.detail = f"no data from {address(url)} for {self._read_timeout:g} s"
            except (aiohttp.ClientError, OSError, HttpProcessingError) as error:
                attempt.reason = "dropped"
                attempt.detail = f"connection to {address(url)} lost: {describe(error)}"
        finally:
            run.connected = False
            run.attempt = None
            if source.retry_ms is not None:
                self._retry_ms = source.retry_ms
            await source.close()
            if attempt.response is not None:
                attempt.response.close()  # the library leaves error responses open

    def _classify_connect_failure(self, attempt: _Attempt, error: BaseException, url: URL) -> None:
        response = attempt.response
        if response is not None and isinstance(error, ConnectionError):
            # The library answered a status or content type it does not stream.
            status = response.status
            attempt.detail = f"HTTP {status} from {address(url)}"
            if status == 429:
                attempt.reason = "throttled"
                attempt.retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if attempt.retry_after is not None:
                    attempt.detail += f" (Retry-After: {attempt.retry_after:g} s)"
            elif status >= 500:
                attempt.reason = "server_error"
            else:
                attempt.reason = "bad_status"
                if status < 300:
                    attempt.detail += f" is {response.content_type}, not an event stream"
            return
        if isinstance(error, TimeoutError):
            attempt.reason = "timeout"
            attempt.detail = f"no connection to {address(url)} within {self._connect_timeout:g} s"
        elif isinstance(error, aiohttp.ClientConnectorError):
            attempt.reason = "refused"
            attempt.detail = connect_error_message(error, url)
        else:
            attempt.reason = "dropped"
            attempt.detail = f"connection to {address(url)} failed: {describe(error)}"

    def _wait_after(self, attempt: _Attempt) -> float:
        """Seconds to wait before the next attempt; advances the backoff state."""
        if attempt.events:
            self._failures = 0
        floor = self._retry_ms / 1000 if self._retry_ms is not None else 0.0
        if attempt.reason == "throttled":
            throttle = attempt.retry_after
            if throttle is None:
                throttle = THROTTLE_FACTOR * self._backoff_initial
            floor = max(floor, throttle)
        floor = min(floor, SERVER_WAIT_CAP_FACTOR * self._backoff_max)
        wait = backoff_delay(
            self._failures,
            initial=self._backoff_initial,
            maximum=self._backoff_max,
            rng=self._rng,
            floor=floor,
        )
        self._failures += 1
        return wait
