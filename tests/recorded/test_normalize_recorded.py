"""normalize() over every real recording: nothing well-formed is rejected, and each typed field
is the value read from the raw JSON here, in plain Python.

Works on any recording: expectations come from each line itself, never from a file's name or
counts. Hand-written and synthetic events: tests/app/test_normalize*.py.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.contract import Canary, RecentChange
from app.normalize import MAX_EVENT_BYTES, Rejected, normalize
from tests.recordings import lines

#: Every recording was received before this run started.
RECEIVED = datetime.now(UTC)
REJECT_CODES = {
    "too_large",
    "invalid_json",
    "not_an_object",
    "unsupported_schema",
    "missing_field",
    "invalid_field",
    "out_of_range",
}
TYPES = {"edit", "new", "log", "categorize", "external"}
LEGACY_SCHEMAS = {"mediawiki/recentchange/1", "mediawiki/recentchange/2"}
CURRENT_SCHEMA = re.compile(r"/mediawiki/recentchange/1\.\d+\.\d+")
#: How many mismatches a failure lists.
SHOWN = 20


def each_event(recordings: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(``file:line``, payload) for every event of every recording."""
    for path in recordings:
        for number, data in enumerate(lines(path), start=1):
            yield f"{path.name}:{number}", data


def parsed(data: bytes) -> Any:
    """The payload as plain Python (the standard library's reader, independent of the
    normalizer's), or None when it is no JSON."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def report(problems: list[str]) -> str:
    more = f"\n... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return "\n".join(problems[:SHOWN]) + more


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count_or_null(value: Any) -> bool:
    return value is None or (_is_int(value) and value >= 0)


def _filled(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _time(value: Any) -> datetime | None:
    """An ISO-8601 time with a zone, in UTC; None for anything else."""
    try:
        parsed = datetime.fromisoformat(value)
        return None if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def flaw(source: Any) -> str | None:
    """Why ``source`` is no well-formed recentchange event (app/README.md, "Bad input"), or None."""
    if not isinstance(source, dict) or not isinstance(source.get("meta"), dict):
        return "no object with a meta object"
    meta = source["meta"]
    if not (_filled(meta.get("id")) and _time(meta.get("dt"))):
        return "meta.id or meta.dt"
    if any(meta.get(key) is not None and not isinstance(meta[key], str) for key in meta.keys() & {
        "domain", "stream", "schema_uri"
    }):  # fmt: skip
        return "meta.domain, stream or schema_uri not text"
    schema = source.get("$schema")
    if schema is not None:
        if not (isinstance(schema, str) and CURRENT_SCHEMA.fullmatch(schema)):
            return "$schema"
        if not meta.get("stream"):
            return "meta.stream"
    elif meta.get("schema_uri") not in LEGACY_SCHEMAS:
        return "meta.schema_uri"
    if source.get("type") not in TYPES:
        return "type"
    if not (_filled(source.get("wiki")) and _filled(source.get("title"))):
        return "wiki or title"
    if not (_is_int(source.get("namespace")) and source["namespace"] >= -2):
        return "namespace"
    if not isinstance(source.get("bot"), bool):
        return "bot"
    if not (_filled(source.get("server_name")) or _filled(meta.get("domain"))):
        return "server_name"
    for key in ("user", "comment", "log_type", "log_action", "server_name"):
        if source.get(key) is not None and not isinstance(source[key], str):
            return key
    for key in ("minor", "patrolled"):
        if source.get(key) is not None and not isinstance(source[key], bool):
            return key
    if not _count_or_null(source.get("id")):
        return "id"
    for key in ("length", "revision"):
        pair = source.get(key)
        if pair is not None and not (
            isinstance(pair, dict) and _count_or_null(pair.get("old"))
            and _count_or_null(pair.get("new"))
        ):  # fmt: skip
            return key
    timestamp = source.get("timestamp")
    if timestamp is not None and not (_is_int(timestamp) and 0 <= timestamp < 10**11):
        return "timestamp"
    when = _time(meta["dt"]) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    if not datetime(2001, 1, 1, tzinfo=UTC) <= when <= RECEIVED + timedelta(days=1):
        return "event time out of range"
    return None


def test_every_recorded_event_is_typed_a_canary_or_dead_lettered_with_a_reason(
    recordings: list[Path],
) -> None:
    """A well-formed event is never rejected; a rejection names a documented reason."""
    problems, typed = [], 0
    for where, data in each_event(recordings):
        source = parsed(data)
        try:
            result = normalize(data, received_at=RECEIVED)
        except Rejected as rejection:
            if rejection.code not in REJECT_CODES or not rejection.detail:
                problems.append(f"{where}: rejected without a documented reason: {rejection}")
            elif flaw(source) is None and len(data) <= MAX_EVENT_BYTES:
                problems.append(f"{where}: well-formed, yet rejected: {rejection}")
            continue
        meta = source.get("meta") if isinstance(source, dict) else None
        canary = isinstance(meta, dict) and meta.get("domain") == "canary"
        if isinstance(result, Canary) is not canary:
            problems.append(f"{where}: {type(result).__name__}, but meta.domain says otherwise")
        elif isinstance(result, RecentChange):
            typed += 1
            why = flaw(source)
            if why is not None:
                problems.append(f"{where}: typed, though not well-formed ({why})")
    assert not problems, report(problems)
    assert typed, "no recorded event became a typed event"


def user_kind(user: str | None, bot: bool) -> str:
    """The contract's user kinds, from the name and the bot flag."""
    if user is None:
        return "hidden"
    if bot:
        return "bot"
    try:
        ipaddress.ip_address(user)
        return "anonymous"
    except ValueError:
        pass
    return "temporary" if re.match(r"~\d{4}-", user) else "registered"


def expected(source: dict[str, Any]) -> dict[str, Any]:
    """The typed event's fields, read from the raw JSON."""
    meta = source["meta"]
    length, revision = source.get("length") or {}, source.get("revision") or {}
    new, old = length.get("new"), length.get("old")
    emitted = _time(meta["dt"])
    timestamp = source.get("timestamp")
    return {
        "source_schema": source.get("$schema") or meta.get("schema_uri"),
        "event_id": meta["id"],
        "event_time": emitted if timestamp is None else datetime.fromtimestamp(timestamp, UTC),
        "emitted_at": emitted,
        "wiki": source["wiki"],
        "server_name": source.get("server_name") or meta.get("domain"),
        "type": source["type"],
        "namespace": source["namespace"],
        "title": source["title"],
        "rc_id": source.get("id"),
        "user": source.get("user"),
        "user_kind": user_kind(source.get("user"), source["bot"]),
        "bot": source["bot"],
        "minor": source.get("minor"),
        "patrolled": source.get("patrolled"),
        "length_old": old,
        "length_new": new,
        "length_delta": None if new is None else new - (old or 0),
        "revision_old": revision.get("old"),
        "revision_new": revision.get("new"),
        "log_type": source.get("log_type"),
        "log_action": source.get("log_action"),
        "comment": source.get("comment"),
    }


def test_typed_fields_match_the_raw_json(recordings: list[Path]) -> None:
    problems, typed = [], 0
    for where, data in each_event(recordings):
        try:
            event = normalize(data, received_at=RECEIVED)
        except Rejected:
            continue  # the test above holds rejections to their reasons
        if not isinstance(event, RecentChange):
            continue
        typed += 1
        actual = event.model_dump()
        for field, value in expected(parsed(data)).items():
            if actual[field] != value:
                problems.append(f"{where}: {field} is {actual[field]!r}, the source says {value!r}")
    assert not problems, report(problems)
    assert typed, "no recorded event became a typed event"
