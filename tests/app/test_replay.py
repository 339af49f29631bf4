"""The replay server, read with a plain aiohttp client and a byte-level SSE parser."""

from __future__ import annotations

import asyncio
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

from infra.replay.server import ReplayOptions, ReplayServer, pace
from infra.replay.sources import SyntheticEvents
from infra.replay.synthetic import StreamOptions, SyntheticStream
from infra.replay.wire import CONTENT_TYPE, STREAM_PATH
from infra.replay_server import ReplayMode
from tests.events import stream, synthetic

REPO = Path(__file__).resolve().parents[2]
#: A fixed start: the same events, and the same times, on every run.
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LINES = synthetic(60, start=START)


def wikimedia_id(offset: int) -> list[dict[str, Any]]:
    return [
        {"topic": "eqiad.mediawiki.recentchange", "partition": 0, "offset": offset},
        {"topic": "codfw.mediawiki.recentchange", "partition": 0, "offset": -1},
    ]


def dt_of(line: bytes) -> datetime:
    return datetime.fromisoformat(orjson.loads(line)["meta"]["dt"])


def offset_of(frame: dict[str, bytes]) -> int:
    return int(orjson.loads(frame["id"])[0]["offset"])


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

    async def start(
        events: list[bytes] | SyntheticEvents, **options: Any
    ) -> tuple[ReplayServer, str]:
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


async def test_last_event_id_resumes_right_after_that_event(serve: Serve) -> None:
    server, url = await serve(LINES)
    last_id = orjson.dumps(wikimedia_id(9)).decode()

    seen = await read_stream(url, headers={"Last-Event-ID": last_id})

    assert [frame["data"] for frame in seen.frames] == LINES[10:]
    assert orjson.loads(seen.frames[0]["id"]) == wikimedia_id(10)
    assert server.requests == [(last_id, "")]


async def test_a_wikimedia_timestamp_id_resumes_by_time(serve: Serve) -> None:
    # As Wikimedia sends them: the eqiad position given as a timestamp in epoch ms.
    moment = dt_of(LINES[30]) + timedelta(milliseconds=5)
    wikimedia_timestamp_id = orjson.dumps(
        [
            {"topic": "eqiad.mediawiki.recentchange", "partition": 0,
             "timestamp": round(moment.timestamp() * 1000)},
            {"topic": "codfw.mediawiki.recentchange", "partition": 0, "offset": -1},
        ]
    ).decode()  # fmt: skip
    expected = next(i for i, line in enumerate(LINES) if dt_of(line) >= moment)
    _, url = await serve(LINES)

    seen = await read_stream(url, headers={"Last-Event-ID": wikimedia_timestamp_id}, limit=1)

    assert 30 < expected < len(LINES)
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
    recorded = (max(times) - times[0]).total_seconds()
    _, url = await serve(LINES, speed=4.0)

    started = time.monotonic()
    seen = await read_stream(url)
    elapsed = time.monotonic() - started

    assert len(seen.events) == len(LINES)
    assert elapsed >= 0.9 * recorded / 4.0


def test_an_event_older_than_the_latest_goes_at_once_and_keeps_the_pace() -> None:
    """A repeat or a late event (an older time) costs no sleep, and the next sleep runs from the
    latest time sent, not from the late one's: a pass lasts its span of event time / speed."""
    base = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    latest, waits = None, []
    for second in (0, 10, 2, 11, 11, 5, 14):
        wait, latest = pace(latest, (0, base + timedelta(seconds=second)), 2.0)
        waits.append(wait)
    assert waits == [0, 5, 0, 0.5, 0, 0, 1.5]  # 7 s: (14 - 0) / 2
    assert latest == (0, base + timedelta(seconds=14))
    # The next pass starts at once; an event without a time changes nothing; no speed, no sleep.
    assert pace(latest, (1, base), 2.0) == (0.0, (1, base))
    assert pace(latest, None, 2.0) == (0.0, latest)
    later = (0, base + timedelta(seconds=20))
    assert pace(latest, later, None) == (0.0, later)


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


# ---- the synthetic source -------------------------------------------------------------------

#: A stream with everything the generator makes: repeats, canaries, legacy envelopes.
VARIED = {"start": START, "duplicate_rate": 0.05, "canary_interval": timedelta(seconds=2),
          "legacy_share": 0.2}  # fmt: skip


async def test_a_finite_synthetic_stream_is_served_byte_for_byte(serve: Serve) -> None:
    expected = synthetic(300, **VARIED)  # a stream of its own: the same seed, the same bytes
    server, url = await serve(SyntheticEvents(stream(**VARIED), count=300, live=False))

    seen = await read_stream(url)

    assert [frame["data"] for frame in seen.frames] == expected
    assert [offset_of(frame) for frame in seen.frames] == list(range(300))
    assert seen.error is None  # ends cleanly after `count` events
    assert (server.event_count, server.events_sent) == (300, 300)
    roles = {orjson.loads(data)["meta"]["domain"] for data in expected}
    assert "canary" in roles and len({orjson.loads(d)["meta"]["id"] for d in expected}) < 300


async def test_last_event_id_resumes_an_endless_synthetic_stream_right_after_it(
    serve: Serve,
) -> None:
    expected = synthetic(1010, **VARIED)[1000:]
    _, url = await serve(SyntheticEvents(stream(**VARIED), live=False))
    last_id = orjson.dumps(wikimedia_id(999)).decode()

    seen = await read_stream(url, headers={"Last-Event-ID": last_id}, limit=10)

    assert [frame["data"] for frame in seen.events] == expected
    assert [offset_of(frame) for frame in seen.events] == list(range(1000, 1010))


@pytest.mark.parametrize("form", ["iso-microseconds", "epoch-ms", "timestamp-id"])
async def test_since_starts_a_synthetic_stream_at_the_first_event_at_or_after_it(
    serve: Serve, form: str
) -> None:
    events = synthetic(400, **VARIED)
    parsed = [orjson.loads(line) for line in events]
    first_legacy = next(p for p, event in enumerate(parsed) if p and "$schema" not in event)
    ids = [event["meta"]["id"] for event in parsed]
    first_repeat = next(p for p, event_id in enumerate(ids) if event_id in ids[:p])
    # meta.dt is cut to milliseconds (to seconds in the legacy envelope) and a repeat carries
    # its original's: just after the event before one of those, the next slot's event is early.
    moments = [
        dt_of(events[250]) + timedelta(microseconds=700),  # between two events
        dt_of(events[310]),  # on one exactly
        dt_of(events[first_legacy - 1]) + timedelta(milliseconds=1),
        dt_of(events[first_repeat - 1]) + timedelta(milliseconds=1),
    ]
    _, url = await serve(SyntheticEvents(stream(**VARIED), live=False))
    for moment in moments:
        millis = round(moment.timestamp() * 1000)
        timestamp_id = [
            {"topic": "eqiad.mediawiki.recentchange", "partition": 0, "timestamp": millis}
        ]
        request: dict[str, Any] = {
            "iso-microseconds": {"params": {"since": moment.isoformat()}},
            "epoch-ms": {"params": {"since": str(millis)}},
            "timestamp-id": {"headers": {"Last-Event-ID": orjson.dumps(timestamp_id).decode()}},
        }[form]
        asked = moment if form == "iso-microseconds" else datetime.fromtimestamp(millis / 1000, UTC)
        expected = next(i for i, line in enumerate(events) if dt_of(line) >= asked)

        seen = await read_stream(url, limit=3, **request)

        assert [frame["data"] for frame in seen.events] == events[expected : expected + 3]
        assert offset_of(seen.events[0]) == expected


@pytest.mark.parametrize("legacy_share", [0.0, 1.0])
async def test_a_worker_starting_at_the_modes_since_gets_the_streams_first_event(
    serve: Serve, legacy_share: float
) -> None:
    """``up --replay`` starts the worker at its mode's ``since``. The stream's origin has
    microseconds, and its first event's ``meta.dt`` is cut to milliseconds (to seconds in the
    legacy envelope): the origin itself as ``since`` would skip it."""
    mode = ReplayMode.synthetic(origin=datetime(2026, 8, 12, 17, 30, 5, 734_990, tzinfo=UTC))
    assert mode.origin is not None and mode.since is not None
    events = stream(seed=mode.seed or 0, start=mode.origin, legacy_share=legacy_share)
    assert dt_of(events.event(0)) < mode.origin
    _, url = await serve(SyntheticEvents(events, live=False))

    seen = await read_stream(url, params={"since": mode.since}, limit=2)

    assert [offset_of(frame) for frame in seen.events] == [0, 1]


async def test_a_live_synthetic_stream_starts_now_and_sends_no_event_before_its_time(
    serve: Serve,
) -> None:
    rate = 80.0
    # An hour of events already behind: a client without a resume point does not get them.
    live = stream(start=datetime.now(UTC) - timedelta(hours=1), rate=rate)
    _, url = await serve(SyntheticEvents(live, live=True))
    arrivals: list[tuple[datetime, dict[str, bytes]]] = []

    connected_at = datetime.now(UTC)
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        frame: dict[str, bytes] = {}
        async for raw in response.content:
            line = raw.removesuffix(b"\n")
            if line.startswith((b"id: ", b"data: ")):
                name, _, value = line.partition(b": ")
                frame[name.decode()] = value
            elif not line and "data" in frame:
                arrivals.append((datetime.now(UTC), frame))
                frame = {}
                if len(arrivals) == 40:
                    break

    times = [dt_of(frame["data"]) for _, frame in arrivals]
    first = offset_of(arrivals[0][1])
    assert connected_at <= times[0]
    assert first > 0.99 * 3600 * rate  # started at now, an hour into the stream
    assert [offset_of(frame) for _, frame in arrivals] == list(range(first, first + 40))
    assert [frame["data"] for _, frame in arrivals] == list(live.events(40, first=first))
    # Paced by event time: none arrived before its meta.dt, so 40 events at 80/s took at
    # least the half second of event time they span.
    assert all(arrived >= when for (arrived, _), when in zip(arrivals, times, strict=True))
    assert times[-1] - times[0] >= timedelta(seconds=39 / rate - 0.002)


async def test_a_live_synthetic_stream_resumed_from_the_past_sends_the_backlog_first(
    serve: Serve,
) -> None:
    live = stream(start=datetime.now(UTC) - timedelta(minutes=5), rate=100.0)
    _, url = await serve(SyntheticEvents(live, live=True))
    behind = live.position_at(datetime.now(UTC) - timedelta(seconds=1))
    last_id = orjson.dumps(wikimedia_id(behind)).decode()

    asked_at = datetime.now(UTC)
    seen = await read_stream(url, headers={"Last-Event-ID": last_id}, limit=150)

    assert [frame["data"] for frame in seen.events] == list(live.events(150, first=behind + 1))
    times = [dt_of(frame["data"]) for frame in seen.events]
    assert times[0] < asked_at < times[-1]  # events from before the request, then live ones


async def test_a_live_synthetic_stream_keeps_only_its_backlog_of_history(serve: Serve) -> None:
    # A client resuming from two hours back starts at the backlog's beginning, ten minutes
    # back: the stream keeps a bounded history, as EventStreams does.
    live = stream(start=datetime.now(UTC) - timedelta(hours=3), rate=5.0)
    _, url = await serve(SyntheticEvents(live, live=True, backlog=timedelta(minutes=10)))
    two_hours_back = live.position_at(datetime.now(UTC) - timedelta(hours=2))
    last_id = orjson.dumps(wikimedia_id(two_hours_back)).decode()

    asked_at = datetime.now(UTC)
    seen = await read_stream(url, headers={"Last-Event-ID": last_id}, limit=20)
    received_at = datetime.now(UTC)

    first = offset_of(seen.events[0])
    assert [frame["data"] for frame in seen.events] == list(live.events(20, first=first))
    first_time = dt_of(seen.events[0]["data"])
    previous_time = dt_of(live.event(first - 1))
    # The first event sent is the first at or after "ten minutes before the request".
    assert asked_at - timedelta(minutes=10) <= first_time
    assert previous_time < received_at - timedelta(minutes=10)


async def start_command_line(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """``python -m infra.replay ARGS`` on a free port; (the process, the URL it logged)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra.replay", *args, "--port", "0",
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "replay exited before logging its URL"
                found = re.search(r"http://127\.0\.0\.1:\d+/v2/stream/recentchange", line)
                if found:
                    return process, found.group(0)
    except BaseException:
        process.kill()
        await process.wait()
        raise


async def stop_command_line(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        return await process.wait()


async def test_command_line_serves_a_file_until_sigterm(tmp_path: Path) -> None:
    recording = tmp_path / "recording.ndjson"
    recording.write_bytes(b"\n".join(LINES) + b"\n")
    process, url = await start_command_line("serve", str(recording), "--fast")
    try:
        seen = await read_stream(url)
        assert [frame["data"] for frame in seen.events] == LINES
        assert seen.error is None
    finally:
        return_code = await stop_command_line(process)
    assert return_code == 0


async def test_command_line_without_a_file_serves_the_synthetic_stream() -> None:
    # Every stream option given: the expectation does not lean on the command's defaults.
    options = StreamOptions(
        seed=5, rate=40.0, start=START, legacy_share=0.3, duplicate_rate=0.1,
        canary_interval=timedelta(seconds=1),
    )  # fmt: skip
    expected = list(SyntheticStream(options).events(80))
    process, url = await start_command_line(
        "serve", "--fast", "--events", "80", "--seed", "5", "--event-rate", "40",
        "--start", START.isoformat(), "--legacy-share", "0.3", "--duplicate-rate", "0.1",
        "--canary-every", "1",
    )  # fmt: skip
    try:
        seen = await read_stream(url)
    finally:
        return_code = await stop_command_line(process)
    assert [frame["data"] for frame in seen.events] == expected
    assert [offset_of(frame) for frame in seen.events] == list(range(80))
    assert seen.error is None  # --events: a finite stream that ends cleanly
    assert return_code == 0


async def test_command_line_without_options_serves_a_live_synthetic_stream() -> None:
    process, url = await start_command_line("serve")
    try:
        connected_at = datetime.now(UTC)
        seen = await read_stream(url, limit=5)
        received_at = datetime.now(UTC)
    finally:
        return_code = await stop_command_line(process)
    events = [orjson.loads(frame["data"]) for frame in seen.events]
    assert len(events) == 5
    assert all(event["$schema"].startswith("/mediawiki/recentchange/1.0.") for event in events)
    first = datetime.fromisoformat(events[0]["meta"]["dt"])
    # It starts now, not at the beginning of the stream the process made when it started.
    assert connected_at <= first <= received_at
    assert return_code == 0
