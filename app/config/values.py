"""The value types of the settings: durations ("30 seconds"), memory sizes ("512m"), ports,
and how Spark and the JVM are told them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

_UNITS = {
    unit: factor
    for factor, units in (
        (0.001, ("ms", "msec", "millisecond", "milliseconds")),
        (1, ("s", "sec", "secs", "second", "seconds")),
        (60, ("m", "min", "mins", "minute", "minutes")),
        (3600, ("h", "hour", "hours")),
        (86400, ("d", "day", "days")),
    )
    for unit in units
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> timedelta:
    """Parse ``"1 minute"``, ``"30 seconds"``, ``"500 ms"``, ``"2h"`` into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and match.group(2).lower() in _UNITS:
            seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
            if seconds > 0:
                return timedelta(seconds=seconds)
    raise ValueError(
        "not a positive duration: write a number and a unit, e.g. '30 seconds', '1 minute', "
        "'500 ms', '2 hours'"
    )


def spark_interval(duration: timedelta) -> str:
    """A timedelta as an interval string that Spark's window/watermark/trigger accept."""
    millis = round(duration.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis} milliseconds"
    return f"{millis // 1000} seconds"


def _memory_size(value: Any) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"\d+[kmgt]?", text) or int(re.sub(r"\D", "", text)) == 0:
        raise ValueError("not a memory size: write e.g. '512m' or '2g'")
    return text


def memory_bytes(size: str) -> int:
    """A MemorySize ('512m', '2g', '1048576') in bytes, as the JVM reads it."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
MemorySize = Annotated[str, BeforeValidator(_memory_size)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveInt = Annotated[int, Field(ge=1)]
NonEmpty = Annotated[str, Field(min_length=1)]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
EventType = Literal["edit", "new", "log", "categorize", "external"]
