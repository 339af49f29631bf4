"""SseSource against the real replay server (and one hand-written SSE server) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import orjson
import pytest
from aiohttp import web

from app.ingest.reconnect import RECONNECT_REASONS, backoff_delay, parse_retry_after
from app.ingest.sse import SseEvent, SseSource, user_agent
from infra.replay.server import ReplayOptions, ReplayServer
from tests.events import synthetic

#: A fixed start: the same events, and the same times, on every run.
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LINES = synthetic(60, start=START)


def dt_of(line: bytes) -> datetime:
    return datetime.fromisoformat(orjson.loads(line)["meta"]["dt"])


CONTACT = "https://example.org/wikipulse-tests"
UA = user_agent(CONTACT)


class Store:
    """What the worker would keep: the events it stored, and so the id to resume from."""

    def __init__(self, resume: str | None = None) -> None:
        self.events: list[SseEvent] = []
        self.resume = resume
        self.asked = 0

    async def last_id(self) -> str | None:
        self.asked += 1
        return self.events[-1].id if self.events else self.resume

    @property
    def data(self) -> list[bytes]:
        return [event.data for event in self.events]


class Watch:
    """Records the callbacks of a source, with their times (and the stored id at reconnects)."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.stored_at_reconnect: list[str | None] = []
        self.reasons: list[str] = []
        self.reconnected_at: list[float] = []
        self.connected_at: list[float] = []
        self.changed = asyncio.Event()

    def on_reconnect(self, reason: str) -> None:
        self.reasons.append(reason)
        if self.store is not None:
            self.stored_at_reconnect.append(self.store.events[-1].id if self.store.events else None)
        self.reconnected_at.append(time.monotonic())
        self.changed.set()

    def on_connect(self) -> None:
        self.connected_at.append(time.monotonic())
        self.changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def make_source(url: str, store: Store, watch: Watch | None = None, **options: Any) -> SseSource:
    settings: dict[str, Any] = {
        "user_agent": UA,
        "read_timeout": 5.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "rng": random.Random(7),
    }
    settings.update(options)
    watch = watch or Watch()
    return SseSource(
        url,
        resume_id=store.last_id,
        on_reconnect=watch.on_reconnect,
        on_connect=watch.on_connect,
        **settings,
    )


async def collect(source: SseSource, store: Store, count: int, timeout: float = 15.0) -> None:
    """Store events until ``count`` are stored, then stop iterating (closes the source)."""
    async with asyncio.timeout(timeout), aclosing(source.events()) as events:
        async for event in events:
            store.events.append(event)
            if len(store.events) >= count:
                break


async def consume_in_background(source: SseSource, store: Store) -> asyncio.Task[None]:
    async def run() -> None:
        async for event in source.events():
            store.events.append(event)

    return asyncio.create_task(run())


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


Serve = Callable[..., Awaitable[tuple[ReplayServer, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[ReplayServer] = []

    async def start(
        events: list[bytes], *, port: int = 0, **options: Any
    ) -> tuple[ReplayServer, str]:
        server = ReplayServer(events, ReplayOptions(**options))
        servers.append(server)
        return server, await server.start(port=port)

    yield start
    for server in servers:
        await server.stop()


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def test_user_agent_follows_the_wikimedia_policy() -> None:
    version = metadata.version("wikipulse")
    expected = f"wikipulse/{version} ({CONTACT}) aiohttp/{aiohttp.__version__}"
    assert user_agent(CONTACT) == expected


class _Highest(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


class _Lowest(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


@pytest.mark.parametrize(
    ("attempt", "rng", "floor", "expected"),
    [
        (0, _Highest(), 0.0, 1.0),
        (1, _Highest(), 0.0, 2.0),
        (5, _Highest(), 0.0, 32.0),
        (6, _Highest(), 0.0, 60.0),  # capped
        (10_000, _Highest(), 0.0, 60.0),  # no overflow
        (3, _Lowest(), 0.0, 0.1),  # full jitter, but never below initial / 10
        (3, _Lowest(), 5.0, 5.0),  # a server-requested minimum
        (0, _Highest(), 90.0, 90.0),  # the floor wins over the cap
    ],
)
def test_backoff_is_capped_exponential_with_full_jitter(
    attempt: int, rng: random.Random, floor: float, expected: float
) -> None:
    wait = backoff_delay(attempt, initial=1.0, maximum=60.0, rng=rng, floor=floor)
    assert wait == pytest.approx(expected)


def test_backoff_draws_spread_over_the_whole_range() -> None:
    rng = random.Random(1)
    waits = [backoff_delay(4, initial=1.0, maximum=60.0, rng=rng) for _ in range(2000)]
    assert 0.1 <= min(waits) < 1.0 and 15.0 < max(waits) <= 16.0


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2026, 6, 20, 15, 49, 48, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(30.0)
    assert parse_retry_after(earlier, now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --------------------------------------------------------------------------------------------
# Against the replay server
# --------------------------------------------------------------------------------------------


async def test_every_event_arrives_once_and_byte_identical_despite_drops(serve: Serve) -> None:
    lines = synthetic(384, seed=3, start=START)
    server, url = await serve(lines, drop_every=50)
    store = Store()
    watch = Watch(store)
    source = make_source(url, store, watch)

    await collect(source, store, len(lines))

    assert store.data == lines  # all of them, once each, in order, byte for byte
    assert len({event.id for event in store.events}) == len(lines)
    assert all(event.event == "message" for event in store.events)
    assert all(event.received_at.tzinfo is not None for event in store.events)
    assert len(watch.reasons) >= 7 and set(watch.reasons) == {"dropped"}
    assert server.requests[0] == (None, "")
    assert [last_id for last_id, _ in server.requests[1:]] == watch.stored_at_reconnect
    assert server.max_active == 1
    assert set(server.user_agents) == {UA}
    assert not source.connected


async def test_a_restarted_source_resumes_after_the_stored_id(serve: Serve) -> None:
    server, url = await serve(LINES)
    before = Store()
    await collect(make_source(url, before), before, 25)

    after = Store(resume=before.events[-1].id)  # the new process read it from its storage
    await collect(make_source(url, after), after, len(LINES) - 25)

    assert before.data == LINES[:25]
    assert after.data == LINES[25:]
    assert server.requests[-1] == (before.events[-1].id, "")


async def test_since_is_used_only_when_there_is_no_resume_id(serve: Serve) -> None:
    since = "2026-03-01T12:00:00.500Z"  # half a second into LINES (40 events a second)
    server, url = await serve(LINES)
    store, watch = Store(), Watch()
    source = make_source(f"{url}?wiki=enwiki", store, watch, since=since)

    task = await consume_in_background(source, store)
    await watch.until(lambda: len(watch.connected_at) >= 2)
    await cancel(task)

    first_query = parse_qs(server.requests[0][1])
    assert server.requests[0][0] is None
    assert first_query == {"wiki": ["enwiki"], "since": [since]}  # merged into the query
    moment = datetime.fromisoformat(since)
    start = next(i for i, line in enumerate(LINES) if dt_of(line) >= moment)
    assert 0 < start < len(LINES)
    assert store.data == LINES[start:]
    assert watch.reasons[0] == "ended"
    assert server.requests[1] == (store.events[-1].id, "wiki=enwiki")  # no since any more


async def test_throttled_429_waits_at_least_retry_after(serve: Serve) -> None:
    server, url = await serve(LINES[:3], fail_first=1, fail_status=429, retry_after=1)
    store, watch = Store(), Watch()

    source = make_source(url, store, watch, backoff_max=0.5)  # server waits capped at 2.5 s

    started = time.monotonic()
    await collect(source, store, 3)
    elapsed = time.monotonic() - started

    assert watch.reasons == ["throttled"]
    assert elapsed >= 1.0
    assert store.data == LINES[:3]
    assert (server.connections, server.max_active) == (2, 1)


async def test_throttled_429_without_retry_after_waits_ten_times_the_initial_backoff(
    serve: Serve,
) -> None:
    _, url = await serve(LINES[:1], fail_first=1, fail_status=429)
    store, watch = Store(), Watch()
    source = make_source(url, store, watch, backoff_initial=0.05, backoff_max=0.2)

    await collect(source, store, 1)

    assert watch.reasons == ["throttled"]
    assert watch.connected_at[0] - watch.reconnected_at[0] >= 0.5


async def test_server_requested_waits_are_capped_at_five_times_backoff_max(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = await serve(LINES[:1], fail_first=1, fail_status=429, retry_after=3600)
    store, watch = Store(), Watch()
    source = make_source(url, store, watch, backoff_initial=0.01, backoff_max=0.1)

    with caplog.at_level(logging.WARNING, logger="app.ingest.sse"):
        await collect(source, store, 1)

    assert watch.reasons == ["throttled"]
    assert watch.connected_at[-1] - watch.reconnected_at[0] >= 0.5
    assert "reconnecting in 0.50 s" in caplog.text


async def test_server_errors_back_off_and_recover_one_connection_at_a_time(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server, url = await serve(LINES[:5], fail_first=3, fail_status=503)
    store, watch = Store(), Watch()

    with caplog.at_level(logging.WARNING, logger="app.ingest.sse"):
        await collect(make_source(url, store, watch), store, 5)

    assert watch.reasons == ["server_error"] * 3
    assert store.data == LINES[:5]
    assert (server.connections, server.max_active) == (4, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("server_error" in m and "HTTP 503" in m and "reconnecting in" in m for m in warnings)


async def test_a_refused_connection_is_retried_until_the_server_is_up(serve: Serve) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v2/stream/recentchange"
    store, watch = Store(), Watch()
    source = make_source(url, store, watch, backoff_initial=0.05, backoff_max=0.1)

    task = await consume_in_background(source, store)
    await watch.until(lambda: bool(watch.reasons))
    server, _ = await serve(LINES[:4], port=port)
    await watch.until(lambda: len(store.events) == 4 or task.done())
    await cancel(task)

    assert watch.reasons[0] == "refused" and set(watch.reasons[:-1]) <= {"refused"}
    assert store.data == LINES[:4]
    assert server.max_active == 1


async def test_a_silent_server_is_timed_out_and_reconnected(serve: Serve) -> None:
    server, url = await serve([], hold_open=True)  # headers and ":ok", then nothing
    store, watch = Store(), Watch()
    source = make_source(url, store, watch, read_timeout=0.5)

    started = time.monotonic()
    task = await consume_in_background(source, store)
    await watch.until(lambda: len(watch.reasons) >= 2)
    elapsed = time.monotonic() - started
    await cancel(task)

    assert watch.reasons[:2] == ["timeout", "timeout"]
    assert elapsed >= 2 * 0.5
    assert server.max_active == 1
    assert not source.connected
    async with asyncio.timeout(5):  # cancelling closed the connection
        while server.active:
            await asyncio.sleep(0.02)


async def test_close_stops_the_stream_from_another_task(serve: Serve) -> None:
    server, url = await serve(LINES[:2], hold_open=True)
    store, watch = Store(), Watch()
    source = make_source(url, store, watch)

    task = await consume_in_background(source, store)
    await watch.until(lambda: len(store.events) == 2 or task.done())
    assert source.connected
    await source.close()
    async with asyncio.timeout(5):
        await task  # ends, no reconnection

    assert watch.reasons == []
    assert not source.connected
    with pytest.raises(RuntimeError):
        await anext(aiter(source.events()))
    async with asyncio.timeout(5):
        while server.active:
            await asyncio.sleep(0.02)


async def test_close_during_a_backoff_wait_ends_the_iteration_at_once(serve: Serve) -> None:
    _, url = await serve(LINES, fail_first=100, fail_status=503)
    store, watch = Store(), Watch()
    source = make_source(url, store, watch, backoff_initial=30.0, backoff_max=60.0)

    task = await consume_in_background(source, store)
    await watch.until(lambda: bool(watch.reasons))
    started = time.monotonic()
    await source.close()
    async with asyncio.timeout(5):
        await task
    assert time.monotonic() - started < 3.0  # did not sit out a wait of 3 s or more
    assert watch.reasons == ["server_error"]


async def test_a_new_iteration_takes_over_from_an_abandoned_one(serve: Serve) -> None:
    # The worker's pattern: its loop body fails (e.g. Kafka), it iterates events() again.
    server, url = await serve(LINES[:10], hold_open=True)
    store = Store()
    source = make_source(url, store)

    with pytest.raises(LookupError):
        async for event in source.events():
            store.events.append(event)
            if len(store.events) == 5:
                raise LookupError("storing failed")
    async with asyncio.timeout(10):
        async for event in source.events():
            store.events.append(event)
            if len(store.events) == 10:
                break
    await source.close()

    assert store.data == LINES[:10]
    assert server.requests[1] == (store.events[4].id, "")
    assert server.max_active == 1


async def test_the_server_retry_field_is_a_minimum_wait(serve: Serve) -> None:
    server, url = await serve(LINES[:3], retry_ms=400)
    store, watch = Store(), Watch()
    source = make_source(url, store, watch, backoff_max=0.2)  # retry: 400 ms is above the max
    task = await consume_in_background(source, store)

    await watch.until(lambda: len(watch.connected_at) >= 2)
    await cancel(task)

    assert watch.reasons[0] == "ended"
    assert watch.connected_at[1] - watch.reconnected_at[0] >= 0.4
    assert store.data == LINES[:3]
    assert server.requests[1][0] == store.events[-1].id
    assert not source.connected


async def test_malformed_frames_arrive_as_events_with_their_bytes(serve: Serve) -> None:
    events = LINES[:20]
    server, url = await serve(events, malformed_every=4)
    store = Store()
    frames = 20 + 20 // 3  # malformed frames have positions of their own

    await collect(make_source(url, store), store, frames)

    received = store.data
    bad = [data for i, data in enumerate(received) if (i + 1) % 4 == 0]
    good = [data for i, data in enumerate(received) if (i + 1) % 4 != 0]
    assert good == events
    assert len(bad) == 6
    for data in bad:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(data)
    assert any(data.endswith(b"\xff\xfe\xfd") for data in bad)  # invalid UTF-8, kept
    assert len({event.id for event in store.events}) == frames
    assert server.connections == 1


async def test_a_bad_request_is_reported_and_retried_with_backoff(serve: Serve) -> None:
    server, url = await serve(LINES)
    store, watch = Store(resume="not a wikimedia id"), Watch()

    task = await consume_in_background(make_source(url, store, watch), store)
    await watch.until(lambda: len(watch.reasons) >= 3)
    await cancel(task)

    assert watch.reasons[:3] == ["bad_status"] * 3
    assert set(watch.reasons) <= RECONNECT_REASONS
    assert store.events == []
    assert all(last_id == "not a wikimedia id" for last_id, _ in server.requests)


# --------------------------------------------------------------------------------------------
# Against a hand-written SSE server: the parts of the format the replay server never sends
# --------------------------------------------------------------------------------------------

RAW_STREAM = (
    b":ok\n\n"
    b": heartbeat\n\n"
    b'event: canary-ping\nid: 1\ndata: {"ping":true}\n\n'
    b'id: 2\ndata: {"a":1}\n\n'
    b"event: message\ndata: line1\ndata: line2\n\n"
    b"retry: 10\n\n"
    b"event: message\nid: 3\ndata:  two spaces\n\n"
    b"event: message\nid: 4\ndata: caf\xc3\xa9 \xff\xfe\n\n"
    b"event: message\r\nid: 5\r\ndata: crlf\r\n\r\n"
    b"event: message\nid: 6\ndata: never finished"
)


@pytest.fixture
async def raw_server() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(RAW_STREAM)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/stream", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/stream"
    await runner.cleanup()


async def test_only_message_events_are_yielded_with_exact_bytes(raw_server: str) -> None:
    store = Store()
    await collect(make_source(raw_server, store), store, 5)

    assert [(event.id, event.data) for event in store.events] == [
        ("2", b'{"a":1}'),  # default type is "message"
        ("2", b"line1\nline2"),  # no id: keeps the last one; multi-line data joined
        ("3", b" two spaces"),  # exactly one space after the colon is removed
        ("4", b"caf\xc3\xa9 \xff\xfe"),  # invalid UTF-8 survives
        ("5", b"crlf"),
    ]
    assert {event.event for event in store.events} == {"message"}
