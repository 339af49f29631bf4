"""When and why the SSE source (:mod:`app.ingest.sse`) reconnects: the reasons it counts, the
waits between attempts, and the failure a person reads in the worker's ``/health``.

Waits (``wait`` below is in seconds):

* ``wait = rng.uniform(0, min(backoff_max, backoff_initial * 2**attempt))``, never below
  ``backoff_initial / 10`` (no tight loop even when the jitter draws 0). ``attempt`` counts
  failed connections in a row and is reset when a connection delivered at least one event.
* The server's ``retry:`` field (milliseconds, the last value received) is a minimum wait.
* HTTP 429: at least ``Retry-After`` (seconds or an HTTP date) when present, else at least
  ``10 * backoff_initial``.
* Waits the server asks for are honoured up to ``5 * backoff_max`` (5 minutes by default), so a
  bogus ``retry:`` or ``Retry-After`` cannot stall ingestion for hours.
"""

from __future__ import annotations

import errno
import random
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, Literal, get_args

import aiohttp
from yarl import URL

ReconnectReason = Literal[
    "dropped", "ended", "refused", "server_error", "throttled", "timeout", "bad_status"
]
#: Every reason :class:`app.ingest.sse.SseSource` passes to ``on_reconnect``.
RECONNECT_REASONS: Final[frozenset[str]] = frozenset(get_args(ReconnectReason))

#: The shortest wait, as a fraction of ``backoff_initial``.
MIN_WAIT_FRACTION: Final = 0.1
#: On HTTP 429 without ``Retry-After``: wait at least this many times ``backoff_initial``.
THROTTLE_FACTOR: Final = 10.0
#: Server-requested waits (``retry:``, ``Retry-After``) are capped at this many ``backoff_max``.
SERVER_WAIT_CAP_FACTOR: Final = 5.0


@dataclass(frozen=True)
class StreamFailure:
    """Why the last connection failed or ended, and when the next one is tried."""

    #: The reconnect reason (as counted in the worker's metrics).
    reason: str
    #: What happened, for a person: "connection refused to stream.wikimedia.org:443",
    #: "DNS lookup failed for stream.wikimedia.org", "HTTP 429 from ...".
    message: str
    at: datetime
    next_attempt: datetime
    #: Attempts in a row that delivered no event, this one included.
    failures: int


def backoff_delay(
    attempt: int, *, initial: float, maximum: float, rng: random.Random, floor: float = 0.0
) -> float:
    """Capped exponential backoff with full jitter, never below ``floor`` nor ``initial/10``."""
    ceiling = min(maximum, initial * 2.0 ** min(attempt, 64))
    return max(rng.uniform(0.0, ceiling), floor, initial * MIN_WAIT_FRACTION)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def connect_error_message(error: aiohttp.ClientConnectorError, url: URL) -> str:
    """A TCP, DNS or TLS failure to connect, said the way a person looks for its cause."""
    where = address(url)
    cause = error.os_error
    if isinstance(error, aiohttp.ClientConnectorDNSError) or isinstance(cause, socket.gaierror):
        return f"DNS lookup failed for {url.host} ({cause.strerror or cause})"
    if isinstance(error, aiohttp.ClientSSLError) or isinstance(cause, ssl.SSLError):
        return f"TLS handshake with {where} failed ({_ssl_reason(cause)})"
    if cause.errno == errno.ECONNREFUSED:
        return f"connection refused to {where}"
    if cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"no route to {where} (network unreachable)"
    return f"cannot connect to {where} ({cause.strerror or describe(cause)})"


def _ssl_reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {error.verify_message}"
    return getattr(error, "reason", None) or describe(error)


def address(url: URL) -> str:
    return f"{url.host}:{url.port}"


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
