"""SseSource says why it could not connect: refused, TLS, DNS, an HTTP status; when; and when it
tries again (what the worker's /health shows). Local servers only, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from yarl import URL

from app.ingest.reconnect import StreamFailure, connect_error_message
from app.ingest.sse import SseSource, user_agent
from app.ingest.task import INGEST_RECONNECT_REASONS
from infra.processes import free_port
from infra.replay.server import ReplayOptions, ReplayServer
from tests.events import synthetic

BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 1.0


class Failures:
    """What the source said before each wait (read in ``on_reconnect``, as the worker does)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, StreamFailure | None]] = []
        self.source: SseSource | None = None
        self.changed = asyncio.Event()

    def on_reconnect(self, reason: str) -> None:
        assert self.source is not None
        self.seen.append((reason, self.source.last_failure))
        self.changed.set()


async def failures_of(url: str, count: int) -> tuple[list[tuple[str, StreamFailure]], datetime]:
    """Follow ``url`` until ``count`` connections failed; (reason, failure) of each, and when
    the first attempt started."""
    failures = Failures()
    source = SseSource(
        url,
        user_agent=user_agent("https://example.org/wikipulse-tests"),
        backoff_initial=BACKOFF_INITIAL,
        backoff_max=BACKOFF_MAX,
        resume_id=_no_resume,
        on_reconnect=failures.on_reconnect,
        rng=random.Random(3),
    )
    failures.source = source
    started = datetime.now(UTC)

    async def follow() -> None:
        async for _ in source.events():
            raise AssertionError("no event was expected")

    task = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(30):
            while len(failures.seen) < count:
                failures.changed.clear()
                await failures.changed.wait()
    finally:
        await source.close()
        await task
    assert all(failure is not None for _, failure in failures.seen), "on_reconnect came first"
    return [(reason, failure) for reason, failure in failures.seen if failure is not None], started


async def _no_resume() -> str | None:
    return None


Failing = Callable[..., Awaitable[tuple[ReplayServer, URL]]]


@pytest.fixture
async def failing() -> AsyncIterator[Failing]:
    """Start a replay server that answers every connection (its first 100) with an HTTP error
    (``fail_status``, ``retry_after``): the server and its stream URL."""
    servers: list[ReplayServer] = []

    async def start(**options: int) -> tuple[ReplayServer, URL]:
        server = ReplayServer(synthetic(3), ReplayOptions(fail_first=100, **options))
        servers.append(server)
        return server, URL(await server.start())

    yield start
    for server in servers:
        await server.stop()


async def test_a_refused_connection_names_the_address_its_time_and_the_next_attempt() -> None:
    port = free_port()  # nobody listens there
    seen, started = await failures_of(f"http://127.0.0.1:{port}/v2/stream/recentchange", 3)
    for number, (reason, failure) in enumerate(seen, start=1):
        assert reason == failure.reason == "refused"
        assert failure.message == f"connection refused to 127.0.0.1:{port}"
        assert failure.failures == number
        assert started <= failure.at <= datetime.now(UTC)
        # the configured backoff: at least a tenth of the initial wait, at most the maximum
        waited = (failure.next_attempt - failure.at).total_seconds()
        assert BACKOFF_INITIAL / 10 <= waited <= BACKOFF_MAX
    assert seen[0][1].at < seen[1][1].at < seen[2][1].at
    # each attempt comes once the previous one's wait is over
    assert seen[0][1].next_attempt <= seen[1][1].at


@pytest.mark.parametrize(
    ("status", "reason"), [(503, "server_error"), (500, "server_error"), (404, "bad_status")]
)
async def test_an_http_error_names_its_status(failing: Failing, status: int, reason: str) -> None:
    server, url = await failing(fail_status=status)
    [(said, failure)], started = await failures_of(str(url), 1)
    assert said == failure.reason == reason
    assert failure.message == f"HTTP {status} from 127.0.0.1:{url.port}"
    assert started <= failure.at <= datetime.now(UTC)
    assert server.connections == 1


async def test_throttling_says_how_long_the_server_asked_to_wait(failing: Failing) -> None:
    _, url = await failing(fail_status=429, retry_after=3)
    [(said, failure)], _ = await failures_of(str(url), 1)
    assert said == failure.reason == "throttled"
    assert failure.message == f"HTTP 429 from 127.0.0.1:{url.port} (Retry-After: 3 s)"
    # Retry-After (3 s) is above any backoff wait here (at most 1 s): it is the wait
    assert failure.next_attempt - failure.at == timedelta(seconds=3)


async def test_tls_to_a_server_that_speaks_plain_http_is_named(failing: Failing) -> None:
    server, plain = await failing(fail_status=503)
    url = plain.with_scheme("https")
    [(said, failure)], _ = await failures_of(str(url), 1)
    assert said == failure.reason == "refused"
    assert failure.message.startswith(f"TLS handshake with 127.0.0.1:{url.port} failed (")
    assert server.connections == 0  # no HTTP request ever reached it


def test_a_failed_dns_lookup_is_named() -> None:
    # Built by hand: a real lookup would ask the machine's resolver, off this machine.
    url = URL("https://stream.wikimedia.org/v2/stream/recentchange")
    key = ConnectionKey("stream.wikimedia.org", 443, True, True, None, None, None, None)
    lookup = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    error = aiohttp.ClientConnectorDNSError(key, lookup)
    assert connect_error_message(error, url) == (
        "DNS lookup failed for stream.wikimedia.org (Name or service not known)"
    )


def test_every_reconnect_reason_the_worker_counts_is_documented() -> None:
    # kafka_error is the worker's own (writing to the raw topic failed), the rest the source's
    assert {"kafka_error", "refused", "throttled"} <= INGEST_RECONNECT_REASONS
    readme = (Path(__file__).resolve().parents[2] / "infra" / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `wikipulse_sse_reconn")]
    documented = set(re.findall(r"`([a-z_]+)`", row.split("stream:", 1)[1]))
    assert documented == INGEST_RECONNECT_REASONS
