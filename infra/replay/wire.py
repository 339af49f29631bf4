"""EventStreams' wire format: frames, Wikimedia-shaped ids, ``Last-Event-ID`` and ``since``
parsing, and the rewriting of a recorded event for a later loop pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

STREAM_PATH: Final = "/v2/stream/recentchange"
EQIAD_TOPIC: Final = "eqiad.mediawiki.recentchange"
CODFW_TOPIC: Final = "codfw.mediawiki.recentchange"
CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"


class BadRequestError(ValueError):
    """A request parameter the server cannot use (answered with HTTP 400)."""


# --------------------------------------------------------------------------------------------
# Pure helpers: ids, times, rewriting
# --------------------------------------------------------------------------------------------


def event_id(position: int) -> str:
    """The Wikimedia-shaped SSE id of the event at ``position``."""
    return orjson.dumps(
        [
            {"topic": EQIAD_TOPIC, "partition": 0, "offset": position},
            {"topic": CODFW_TOPIC, "partition": 0, "offset": -1},
        ]
    ).decode()


def parse_last_event_id(value: str) -> int | datetime:
    """The position to resume at (offset + 1), or the time to resume from; BadRequestError."""
    try:
        entries = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise BadRequestError(f"Last-Event-ID is not JSON: {value[:80]!r}") from None
    if not isinstance(entries, list):
        raise BadRequestError("Last-Event-ID must be a JSON array")
    positions = [e for e in entries if isinstance(e, dict) and _is_int(e.get("offset"))]
    positions.sort(key=lambda e: e.get("topic") != EQIAD_TOPIC)
    for entry in positions:
        if entry["offset"] >= 0:
            return int(entry["offset"]) + 1
    for entry in entries:
        if isinstance(entry, dict) and _is_int(entry.get("timestamp")):
            return _from_epoch_ms(entry["timestamp"])
    raise BadRequestError("Last-Event-ID has no usable offset or timestamp")


def parse_since(value: str) -> datetime:
    """``since``: epoch milliseconds or an ISO-8601 time (naive means UTC); BadRequestError."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return _from_epoch_ms(int(text))
    parsed = _iso_time(text)
    if parsed is None:
        raise BadRequestError(f"since is neither epoch ms nor an ISO-8601 time: {value!r}")
    return parsed


def _iso_time(text: str) -> datetime | None:
    """An ISO-8601 time (naive means UTC), or None when it is not one."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def event_time(data: bytes) -> datetime | None:
    """The time of an event: ``meta.dt``, else ``timestamp`` (epoch s); None if neither."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    meta = event.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("dt"), str):
        parsed = _iso_time(meta["dt"])
        if parsed is not None:
            return parsed
    stamp = event.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        try:
            return datetime.fromtimestamp(stamp, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def rewrite_event(data: bytes, *, new_id: str, shift: timedelta) -> bytes:
    """A looped copy: ``meta.id`` replaced, ``meta.dt`` and ``timestamp`` moved by ``shift``.

    Payloads that are not a JSON object are returned unchanged.
    """
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(event, dict):
        return data
    meta = event.get("meta")
    if isinstance(meta, dict):
        meta["id"] = new_id
        if isinstance(meta.get("dt"), str):
            meta["dt"] = _shift_iso(meta["dt"], shift)
    if _is_int(event.get("timestamp")):
        event["timestamp"] = event["timestamp"] + round(shift.total_seconds())
    return orjson.dumps(event)


def _shift_iso(text: str, shift: timedelta) -> str:
    """Move an ISO time, keeping its style (``Z`` or offset, seconds or milliseconds)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    shifted = (parsed + shift).astimezone(parsed.tzinfo)
    rendered = shifted.isoformat(timespec="milliseconds" if "." in text else "seconds")
    if text.endswith("Z"):
        rendered = rendered.removesuffix("+00:00") + "Z"
    return rendered


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _from_epoch_ms(millis: int) -> datetime:
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise BadRequestError(f"epoch milliseconds out of range: {millis}") from None


def sse_frame(position: int, data: bytes) -> bytes:
    """One EventStreams frame (multi-line payloads become several ``data:`` lines)."""
    lines = b"\ndata: ".join(data.split(b"\n"))
    return b"event: message\nid: " + event_id(position).encode() + b"\ndata: " + lines + b"\n\n"
