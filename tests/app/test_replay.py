"""The replay server, read with a plain aiohttp client and a byte-level SSE parser."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from infra.replay.server import CONTENT_TYPE, STREAM_PATH, ReplayOptions, ReplayServer

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "data" / "recentchange-sample.ndjson"
SHARED = REPO.parent / "shared" / "data" / "recentchange"
FULL = SHARED / "viniciusvdias-pdm-g10-wikimedia-recentchange-sample.ndjson"
FULL_SSE = SHARED / "sse" / "viniciusvdias-pdm-g10-wikimedia-recentchange-sample.sse"

LINES = SAMPLE.read_bytes().splitlines()


def wikimedia_id(offset: int) -> list[dict[str, Any]]:
    return [
        {"topic": "eqiad.mediawiki.recentchange", "partition": 0, "offset": offset},
        {"topic": "codfw.mediawiki.recentchange", "partition": 0, "offset": -1},
    ]


def dt_of(line: bytes) -> datetime:
    return datetime.fromisoformat(orjson.loads(line)["meta"]["dt"])


@dataclass
class Stream:
    """What a client saw on one request."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    frames: list[dict[str, bytes]] = field(default_factory=list)
    comments: list[bytes] = field(default_factory=list)
    error: Exception | None = None

    @property
    def events(self) -> list[dict[str, bytes]]:
        return [frame for frame in self.frames if "data" in frame]


async def read_stream(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    limit: int | None = None,
) -> Stream:
    """GET the stream and parse it byte by byte (stop after ``limit`` event frames)."""
    timeout = aiohttp.ClientTimeout(total=15)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers=headers, params=params) as response,
    ):
        seen = Stream(response.status, dict(response.headers))
        if response.status != 200:
            seen.body = await response.read()
            return seen
        current: dict[str, bytes] = {}
        try:
            async for raw in response.content:
                line = raw.removesuffix(b"\n")
                if not line:
                    if current:
                        seen.frames.append(current)
                        current = {}
                    if limit is not None and len(seen.events) >= limit:
                        break
                elif line.startswith(b":"):
                    seen.comments.append(line[1:])
                else:
                    name, _, value = line.partition(b":")
                    key, value = name.decode(), value.removeprefix(b" ")
                    current[key] = current[key] + b"\n" + value if key in current else value
        except aiohttp.ClientPayloadError as error:
            seen.error = error
        return seen


Serve = Callable[..., Awaitable[tuple[ReplayServer, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start replay servers on free ports; stop them after the test."""
    servers: list[ReplayServer] = []

    async def start(events: list[bytes], **options: Any) -> tuple[ReplayServer, str]:
        server = ReplayServer(events, ReplayOptions(**options))
        servers.append(server)
        return server, await server.start()

    yield start
    for server in servers:
        await server.stop()


async def test_serves_recorded_events_verbatim_in_eventstreams_frames(serve: Serve) -> None:
    server, url = await serve(LINES)
    assert url.startswith("http://127.0.0.1:") and url.endswith(STREAM_PATH)

    seen = await read_stream(url)

    assert seen.status == 200
    assert seen.headers["Content-Type"] == CONTENT_TYPE == "text/event-stream; charset=utf-8"
    assert seen.comments == [b"ok"]
    assert [frame["data"] for frame in seen.frames] == LINES
    assert all(frame["event"] == b"message" for frame in seen.frames)
    assert [orjson.loads(frame["id"]) for frame in seen.frames] == [
        wikimedia_id(i) for i in range(len(LINES))
    ]
    assert seen.frames[0]["id"] == (
        b'[{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":0},'
        b'{"topic":"codfw.mediawiki.recentchange","partition":0,"offset":-1}]'
    )
    assert seen.error is None  # a finite recording ends cleanly
    assert (server.connections, server.events_sent) == (1, len(LINES))
    assert server.requests == [(None, "")]


async def test_from_ndjson_serves_each_non_empty_line_byte_for_byte(tmp_path: Path) -> None:
    source = tmp_path / "events.ndjson"
    source.write_bytes(b'{"a":"\xc3\xa9"}\r\n\n  \n{"b":1}\n{"c": [1, 2]}')
    server = ReplayServer.from_ndjson(source)
    url = await server.start()
    try:
        seen = await read_stream(url)
    finally:
        await server.stop()
    assert server.event_count == 3
    assert [frame["data"] for frame in seen.events] == [
        b'{"a":"\xc3\xa9"}',
        b'{"b":1}',
        b'{"c": [1, 2]}',
    ]


async def test_full_recording_is_served_byte_for_byte() -> None:
    lines = FULL.read_bytes().splitlines()
    server = ReplayServer.from_ndjson(FULL)
    url = await server.start()
    try:
        seen = await read_stream(url)
    finally:
        await server.stop()
    assert len(lines) == 384
    assert [frame["data"] for frame in seen.events] == lines
    # The wire text differs from the raw capture only in the ids (offsets, not timestamps).
    captured = FULL_SSE.read_bytes().rstrip(b"\n").split(b"\n\n")
    assert [part.split(b"\ndata: ", 1)[1] for part in captured] == lines


async def test_last_event_id_resumes_right_after_that_event(serve: Serve) -> None:
    server, url = await serve(LINES)
    last_id = orjson.dumps(wikimedia_id(9)).decode()

    seen = await read_stream(url, headers={"Last-Event-ID": last_id})

    assert [frame["data"] for frame in seen.frames] == LINES[10:]
    assert orjson.loads(seen.frames[0]["id"]) == wikimedia_id(10)
    assert server.requests == [(last_id, "")]


async def test_a_real_wikimedia_timestamp_id_resumes_by_time(serve: Serve) -> None:
    # The first id of the raw capture: eqiad position given as a timestamp in epoch ms.
    real_id = (
        FULL_SSE.read_text().split("\n")[1].removeprefix("id: ")
        if FULL_SSE.exists()
        else (
            '[{"topic":"eqiad.mediawiki.recentchange","partition":0,"timestamp":1781970588989},'
            '{"topic":"codfw.mediawiki.recentchange","partition":0,"offset":-1}]'
        )
    )
    moment = datetime.fromtimestamp(orjson.loads(real_id)[0]["timestamp"] / 1000, UTC)
    expected = next(i for i, line in enumerate(LINES) if dt_of(line) >= moment)
    _, url = await serve(LINES)

    seen = await read_stream(url, headers={"Last-Event-ID": real_id}, limit=1)

    assert seen.events[0]["data"] == LINES[expected]


@pytest.mark.parametrize(
    "header",
    ["not json", "{}", "[]", '[{"topic":"eqiad.mediawiki.recentchange","partition":0}]'],
)
async def test_unusable_last_event_id_is_answered_400(serve: Serve, header: str) -> None:
    _, url = await serve(LINES)
    seen = await read_stream(url, headers={"Last-Event-ID": header})
    assert seen.status == 400
    assert orjson.loads(seen.body)["status"] == 400


@pytest.mark.parametrize("form", ["iso", "iso-offset", "epoch-ms"])
async def test_since_starts_at_the_first_event_at_or_after_it(serve: Serve, form: str) -> None:
    moment = dt_of(LINES[20]) + timedelta(milliseconds=1)
    since = {
        "iso": moment.isoformat().replace("+00:00", "Z"),
        "iso-offset": moment.isoformat(),
        "epoch-ms": str(round(moment.timestamp() * 1000)),
    }[form]
    expected = next(i for i, line in enumerate(LINES) if dt_of(line) >= moment)
    server, url = await serve(LINES)

    seen = await read_stream(url, params={"since": since}, limit=3)

    assert [frame["data"] for frame in seen.events] == LINES[expected : expected + 3]
    assert orjson.loads(seen.events[0]["id"]) == wikimedia_id(expected)
    assert server.requests[0][0] is None


async def test_last_event_id_wins_over_since(serve: Serve) -> None:
    _, url = await serve(LINES)
    seen = await read_stream(
        url,
        headers={"Last-Event-ID": orjson.dumps(wikimedia_id(2)).decode()},
        params={"since": "2030-01-01T00:00:00Z"},
        limit=1,
    )
    assert seen.events[0]["data"] == LINES[3]


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "12:00"])
async def test_bad_since_is_answered_400(serve: Serve, since: str) -> None:
    _, url = await serve(LINES)
    seen = await read_stream(url, params={"since": since})
    assert seen.status == 400


async def test_first_attempts_fail_with_the_status_and_retry_after(serve: Serve) -> None:
    server, url = await serve(LINES[:2], fail_first=2, fail_status=429, retry_after=3)

    first, second, third = [await read_stream(url) for _ in range(3)]

    assert (first.status, second.status, third.status) == (429, 429, 200)
    assert first.headers["Retry-After"] == "3"
    assert len(third.events) == 2
    assert server.connections == 3


async def test_drop_every_cuts_the_connection_without_a_clean_end(serve: Serve) -> None:
    server, url = await serve(LINES, drop_every=7)

    first = await read_stream(url)
    resumed = await read_stream(url, headers={"Last-Event-ID": first.frames[-1]["id"].decode()})

    assert isinstance(first.error, aiohttp.ClientPayloadError)
    assert [frame["data"] for frame in first.frames] == LINES[:7]
    assert [frame["data"] for frame in resumed.frames] == LINES[7:14]
    assert server.events_sent == 14


async def test_malformed_frames_take_positions_of_their_own(serve: Serve) -> None:
    _, url = await serve(LINES, malformed_every=5)

    seen = await read_stream(url)

    offsets = [orjson.loads(frame["id"])[0]["offset"] for frame in seen.frames]
    assert offsets == list(range(len(LINES) + len(LINES) // 4))
    bad = [frame["data"] for i, frame in enumerate(seen.frames) if (i + 1) % 5 == 0]
    good = [frame["data"] for i, frame in enumerate(seen.frames) if (i + 1) % 5 != 0]
    assert good == LINES  # no recorded event is replaced
    for data in bad:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(data)
    assert any(data.endswith(b"\xff\xfe\xfd") for data in bad)  # invalid UTF-8 on the wire


async def test_retry_field_is_sent_before_the_first_event(serve: Serve) -> None:
    _, url = await serve(LINES[:1], retry_ms=1500)
    seen = await read_stream(url)
    assert seen.frames[0] == {"retry": b"1500"}
    assert seen.frames[1]["data"] == LINES[0]


async def test_loop_replays_with_fresh_ids_and_current_times(serve: Serve) -> None:
    server, url = await serve(LINES, loop=True)
    count = len(LINES)

    seen = await read_stream(url, limit=2 * count + 30)
    resent = await read_stream(
        url, headers={"Last-Event-ID": orjson.dumps(wikimedia_id(99)).decode()}, limit=1
    )

    frames = seen.events
    assert [frame["data"] for frame in frames[:count]] == LINES  # first pass verbatim
    assert [orjson.loads(f["id"])[0]["offset"] for f in frames] == list(range(len(frames)))
    original_ids = {orjson.loads(line)["meta"]["id"] for line in LINES}
    now = datetime.now(UTC)
    looped_ids = []
    for position, frame in enumerate(frames[count:], start=count):
        event = orjson.loads(frame["data"])
        original = orjson.loads(LINES[position % count])
        looped_ids.append(event["meta"]["id"])
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            event["meta"]["id"],
        )
        assert abs(datetime.fromisoformat(event["meta"]["dt"]) - now) < timedelta(minutes=2)
        assert event["meta"]["dt"].endswith("Z") and len(event["meta"]["dt"]) == 24
        assert abs(event["timestamp"] - now.timestamp()) < 120
        for key in ("id", "dt"):
            del event["meta"][key], original["meta"][key]
        del event["timestamp"], original["timestamp"]
        assert event == original  # nothing else changes
    assert len(set(looped_ids)) == len(looped_ids)
    assert not original_ids & set(looped_ids)
    # A position always carries the same bytes: a resumed client sees what others saw.
    assert resent.events[0]["data"] == frames[100]["data"]
    assert server.events_sent >= len(frames)


async def test_speed_paces_events_by_their_recorded_gaps(serve: Serve) -> None:
    times = [dt_of(line) for line in LINES]
    recorded = sum(max(0.0, (b - a).total_seconds()) for a, b in itertools.pairwise(times))
    _, url = await serve(LINES, speed=4.0)

    started = time.monotonic()
    seen = await read_stream(url)
    elapsed = time.monotonic() - started

    assert len(seen.events) == len(LINES)
    assert elapsed >= 0.9 * recorded / 4.0


async def test_rate_spaces_events_evenly_whatever_was_recorded(serve: Serve) -> None:
    rate = 2000.0
    _, url = await serve(LINES * 3, rate=rate, speed=1.0)  # rate overrides the recorded pace

    started = time.monotonic()
    seen = await read_stream(url)
    elapsed = time.monotonic() - started

    assert len(seen.events) == 3 * len(LINES)
    assert elapsed >= 0.9 * (len(seen.events) - 1) / rate


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        ReplayOptions(rate=0)


async def test_hold_open_keeps_a_finished_stream_open_and_silent(serve: Serve) -> None:
    server, url = await serve(LINES[:2], hold_open=True)
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = b""
        while body.count(b"\n\n") < 3:  # ":ok" and two events
            body += await response.content.readany()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(response.content.readany(), 0.3)
        assert server.active == 1
    for _ in range(50):  # the server notices the client leaving
        if server.active == 0:
            break
        await asyncio.sleep(0.02)
    assert server.active == 0


async def test_stop_cuts_open_streams(serve: Serve) -> None:
    server, url = await serve([], hold_open=True)
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert await response.content.readline() == b":ok\n"
        await server.stop()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()


@pytest.mark.parametrize(
    "options",
    [{"speed": 0}, {"drop_every": 0}, {"malformed_every": 1}, {"fail_status": 200}],
)
def test_nonsense_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ReplayOptions(**options)


async def test_command_line_serves_a_file_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.replay",
        str(SAMPLE),
        "--port",
        "0",
        "--fast",
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    try:
        url = None
        async with asyncio.timeout(15):
            while url is None:
                line = (await process.stderr.readline()).decode()
                assert line, "replay exited before logging its URL"
                found = re.search(r"http://127\.0\.0\.1:\d+/v2/stream/recentchange", line)
                url = found.group(0) if found else None
        seen = await read_stream(url)
        assert [frame["data"] for frame in seen.events] == LINES
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            return_code = await process.wait()
    assert return_code == 0
