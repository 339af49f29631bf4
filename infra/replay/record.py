"""Record the live stream to NDJSON: `./infra/wikipulse record` (`python -m infra.replay record`).

The capture uses the worker's SSE client (app/ingest/sse.py) with the worker's settings: the
stream URL ``ingestion.wikimedia.url`` (so it can be pointed at a local replay server), the
User-Agent built from ``ingestion.wikimedia.contact``, the read timeout and the backoff. After a
dropped connection it resumes with ``Last-Event-ID`` = the id of the last event written, so
nothing is lost or doubled; ``since`` (EventStreams' ``?since=``, epoch ms or ISO-8601) starts a
backfill.

Each event's ``data:`` payload is written as one line, byte for byte (invalid UTF-8 included),
and flushed at once: an interrupted capture keeps every event it received. A payload that
contains a newline cannot be one NDJSON line; it is left out, counted and logged (EventStreams
sends one JSON object per line, so this is only seen from odd servers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from app.config import Settings
from app.ingest.sse import SseSource, user_agent

logger = logging.getLogger(__name__)

StopReason = Literal["events", "minutes", "interrupted"]


def default_out(now: datetime | None = None) -> Path:
    """``recentchange-<UTC time>.ndjson`` in the current directory."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return Path(f"recentchange-{moment:%Y%m%dT%H%M%SZ}.ndjson")


def since_parameter(text: str) -> str:
    """EventStreams' ``since``: epoch milliseconds as given, or an ISO-8601 time in UTC
    (naive means UTC); ValueError otherwise."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"neither epoch milliseconds nor an ISO-8601 time: {text!r}") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class StreamSettings:
    """Where and how to connect: the worker's SSE settings."""

    url: str
    user_agent: str
    read_timeout: float = 60.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamSettings:
        ingestion = settings.ingestion
        return cls(
            url=ingestion.wikimedia.url,
            user_agent=user_agent(ingestion.wikimedia.contact),
            read_timeout=ingestion.read_timeout.total_seconds(),
            backoff_initial=ingestion.backoff.initial.total_seconds(),
            backoff_max=ingestion.backoff.max.total_seconds(),
        )


@dataclass
class Progress:
    """How far a capture is: what the progress line and the summary say."""

    written: int = 0
    #: Multi-line (or empty) payloads left out: NDJSON holds one event per line.
    skipped: int = 0
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    stopped_by: StopReason | None = None

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def line(self) -> str:
        elapsed = self.elapsed
        rate = self.written / elapsed if elapsed > 0 else 0.0
        text = f"{self.written} events  {elapsed:.1f} s  {rate:.1f}/s"
        if self.reconnects:
            text += f"  {self.reconnects} reconnects"
        if self.skipped:
            text += f"  {self.skipped} multi-line payloads left out"
        return text


async def record(
    out: BinaryIO,
    stream: StreamSettings,
    *,
    since: str | None = None,
    events: int | None = None,
    seconds: float | None = None,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 1.0,
) -> Progress:
    """Write the stream's payloads to ``out`` until ``events`` were written, ``seconds`` passed
    or ``stop`` is set (whichever first; none: only ``stop``)."""
    if events is not None and events < 1:
        raise ValueError("events must be at least 1")
    if seconds is not None and seconds <= 0:
        raise ValueError("seconds must be positive")
    progress = Progress()
    last_id: str | None = None
    clock = asyncio.get_running_loop().time
    deadline = None if seconds is None else clock() + seconds

    async def resume_id() -> str | None:
        return last_id  # every event received so far is written and flushed

    def on_reconnect(reason: str) -> None:
        progress.reconnects += 1

    source = SseSource(
        stream.url,
        user_agent=stream.user_agent,
        read_timeout=stream.read_timeout,
        backoff_initial=stream.backoff_initial,
        backoff_max=stream.backoff_max,
        since=since,
        resume_id=resume_id,
        on_reconnect=on_reconnect,
    )

    async def consume() -> None:
        nonlocal last_id
        async with aclosing(source.events()) as received:
            async for event in received:
                if not event.data or b"\n" in event.data:
                    progress.skipped += 1
                    logger.warning("left out an empty or multi-line payload (SSE id %s)", event.id)
                else:
                    out.write(event.data + b"\n")
                    out.flush()
                    progress.written += 1
                if event.id is not None:
                    last_id = event.id
                if events is not None and progress.written >= events:
                    progress.stopped_by = "events"
                    return
                if deadline is not None and clock() >= deadline:
                    progress.stopped_by = "minutes"
                    return
                if progress.written % 64 == 0:
                    # A buffered backlog is read without suspending: let the timer and the
                    # signal handlers run.
                    await asyncio.sleep(0)

    async def tick() -> None:
        while on_progress is not None:
            await asyncio.sleep(progress_interval)
            on_progress(progress)

    consumer = asyncio.create_task(consume())
    helpers = [asyncio.create_task(tick())]
    if stop is not None:

        async def stopped() -> None:
            await stop.wait()

        helpers.append(asyncio.create_task(stopped()))
    try:
        await asyncio.wait({consumer, *helpers[1:]}, timeout=seconds,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if not consumer.done():  # a consumer that ended has said why already
            interrupted = stop is not None and stop.is_set()
            progress.stopped_by = "interrupted" if interrupted else "minutes"
    finally:
        await source.close()  # ends source.events(), and so the consumer
        for helper in helpers:
            helper.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*helpers)
        try:
            await asyncio.wait_for(consumer, 5.0)
        finally:
            progress.ended = time.monotonic()
    return progress


def summary(progress: Progress, out: Path) -> str:
    """The last line: what was recorded where, and why the capture stopped."""
    why = {
        "events": "the requested number of events",
        "minutes": "the requested time",
        "interrupted": "interrupted",
        None: "ended",
    }[progress.stopped_by]
    return f"recorded {progress.line()} to {out} ({why})"
