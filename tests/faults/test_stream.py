"""Faults of the SSE stream: connections cut, the server killed, the server refusing for a while.

Fault 1 runs on the replay server ``up --replay`` manages (``--drop-every``; SIGKILLed, then
brought back by ``up`` on its port). Fault 6 needs to see every connection attempt and when it
came, so the worker follows a replay server of the test's own (``up --live`` on its URL). Both
send the events at their event-time pace (``PACE``), once the server answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from aiohttp import web

from infra.replay.server import ReplayOptions, ReplayServer
from tests.faults.pipeline import PACE, SAMPLE, FaultStack, kill_group, rss_mb, wait_seconds
from tests.faults.results import Figures
from tests.harness import ReplayThread

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

#: The replay server aborts the TCP connection after this many frames, again and again.
DROP_EVERY = 25
#: How long the killed replay server stays down before `up` brings it back.
SERVER_DOWN_SECONDS = 3.0
#: The error period of fault 6: (until, status, Retry-After) from the first connection on.
ERRORS = ((4.0, 429, 2), (8.0, 503, None))
#: Scheduling slack on a busy 2-core machine, on top of the waits the worker chose.
SLACK = 3.0


def test_stream_cut_every_25_events_and_the_replay_server_killed(
    faults: FaultStack, record: Callable[[str], Figures]
) -> None:
    figures = record("1")
    run = faults.start(
        "cuts",
        faults.fresh_events(SAMPLE),
        speed=PACE,
        options=[f"--drop-every={DROP_EVERY}"],
    )
    figures["events_in"] = len(run.events)
    before = faults.pids(run)
    at_kill = faults.wait_valid(run, 100)
    kill_group(before["replay"])
    wait_seconds(time.monotonic() + SERVER_DOWN_SECONDS)  # the worker finds nobody there
    assert at_kill < len(run.events), "the kill came too late to be mid-stream"

    output = faults.up(run)
    fault_end = time.monotonic()
    after = faults.pids(run)
    assert "replay: started" in output, output
    assert after["replay"] != before["replay"]
    assert after["worker"] == before["worker"], "the worker should ride it out, not restart"

    figures["recovery_seconds"] = faults.wait_caught_up(run, fault_end)
    delivery = faults.delivery(run)
    figures.update(delivery.figures)
    reconnects = faults.reconnects(run)
    cuts = faults.log("replay", 100_000).count("dropping the connection")
    figures.detail("connections cut by the server", cuts)
    figures.detail("worker reconnects by reason", reconnects)
    figures.detail("valid events before the kill", at_kill)
    figures.detail("worker RSS after (MiB)", rss_mb([after["worker"]]))

    assert cuts >= len(run.events) // DROP_EVERY - 2
    assert reconnects.get("dropped", 0) >= cuts
    assert reconnects.get("refused", 0) >= 1, reconnects  # the server was away for 3 s
    assert (delivery.lost, delivery.doubled, delivery.dead_lettered) == (0, 0, 0), delivery
    assert delivery.typed_out == len(run.events)
    assert delivery.raw_records == len(run.events) and delivery.raw_doubled == 0, delivery


class RefusingReplay(ReplayServer):
    """A replay server that answers every connection with an error for a while after the first
    one (per :data:`ERRORS`), recording when each attempt came and how it was answered."""

    def __init__(self, events: list[bytes], options: ReplayOptions) -> None:
        super().__init__(events, options)
        self.first: float | None = None
        self.attempts: list[tuple[float, int]] = []  # (seconds since the first, status)
        self.concurrent = 0
        self.most_concurrent = 0

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        elapsed = now - self.first
        self.concurrent += 1
        self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            for until, status, retry_after in ERRORS:
                if elapsed < until:
                    self.attempts.append((elapsed, status))
                    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
                    return web.json_response(
                        {"status": status, "detail": "faults: refusing on purpose"},
                        status=status,
                        headers=headers,
                    )
            self.attempts.append((elapsed, 200))
            return await super()._stream(request)
        finally:
            self.concurrent -= 1


def test_stream_answering_429_then_503_for_8_s(
    faults: FaultStack, record: Callable[[str], Figures]
) -> None:
    figures = record("6")
    events = faults.fresh_events(SAMPLE)
    server = RefusingReplay(events, ReplayOptions(speed=PACE, hold_open=True))
    with ReplayThread(events, server=server) as replay:
        run = faults.start("refused", events, live_url=replay.url)
        figures["events_in"] = len(events)
        error_end = ERRORS[-1][0]
        assert wait_until_streaming(server, timeout=120), server.attempts
        assert server.first is not None
        figures["recovery_seconds"] = faults.wait_caught_up(run, server.first + error_end)
        attempts = list(server.attempts)
        most_concurrent = server.most_concurrent
        reconnects = faults.reconnects(run)  # before this server goes away
    delivery = faults.delivery(run)
    figures.update(delivery.figures)
    during = [(at, status) for at, status in attempts if status != 200]
    by_status = {status: sum(1 for _, s in during if s == status) for _, status, _ in ERRORS}
    gaps = [
        (status, round(attempts[i + 1][0] - at, 2))
        for i, (at, status) in enumerate(attempts[:-1])
        if status != 200
    ]
    first_stream = next(at for at, status in attempts if status == 200)
    figures.detail("requests during the 8 s of errors", by_status)
    figures.detail("waits after 429 (s)", [gap for status, gap in gaps if status == 429])
    figures.detail("waits after 503 (s)", [gap for status, gap in gaps if status == 503])
    figures.detail("first stream after the errors ended (s)", round(first_stream - error_end, 2))
    figures.detail("most connections at once", most_concurrent)
    figures.detail("worker reconnects by reason", reconnects)

    settings = run.settings.ingestion
    initial = settings.backoff.initial.total_seconds()
    maximum = settings.backoff.max.total_seconds()
    assert most_concurrent == 1, "more than one connection at a time"
    for status, gap in gaps:
        if status == 429:  # Retry-After: 2 is a minimum
            assert gap >= 2.0 - 0.05, gaps
        else:  # capped exponential backoff: never a tight loop, never above the cap
            assert initial / 10 - 0.005 <= gap <= maximum + SLACK, gaps
    assert 1 <= by_status[429] <= 3, by_status  # 4 s at one try per 2 s at most
    # 4 s of 503 with waits drawn up to the 1 s cap: a handful, where a tight loop makes
    # thousands.
    assert 1 <= by_status[503] <= 25, by_status
    assert reconnects.get("throttled") == by_status[429], reconnects
    assert reconnects.get("server_error") == by_status[503], reconnects
    assert first_stream - error_end <= maximum + SLACK
    assert (delivery.lost, delivery.doubled, delivery.dead_lettered) == (0, 0, 0), delivery
    assert delivery.typed_out == len(events)


def wait_until_streaming(server: RefusingReplay, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(status == 200 for _, status in list(server.attempts)):
            return True
        time.sleep(0.25)
    return False
