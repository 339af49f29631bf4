"""normalize()'s rules written out again in plain Python over ``json.loads``, independent of
pydantic: the reason (code and field) an event is rejected for, checking in normalize()'s order
(wire types in field order, then the envelope, the times and the required fields), and every
field of a typed event. The edge tests (tests/app/test_normalize_edges.py) and the recorded layer
(tests/recorded/test_normalize_recorded.py) compare normalize() with them."""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from typing import Any

from app.contract import ChangeType, UserKind
from app.normalize import EARLIEST_EVENT_TIME, FUTURE_TOLERANCE

TYPES = {change_type.value for change_type in ChangeType}
LEGACY = {"mediawiki/recentchange/1", "mediawiki/recentchange/2"}
#: As re.match(r"^...$") reads it: "$" also accepts one final newline.
CURRENT = re.compile(r"/mediawiki/recentchange/1\.\d+\.\d+\n?\Z")
ABSENT = object()


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no number


def _text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _flag(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _count(value: Any) -> bool:
    return value is None or (_integer(value) and value >= 0)


def _namespace(value: Any) -> bool:
    return value is None or (_integer(value) and value >= -2)


def _timestamp(value: Any) -> bool:
    return value is None or _integer(value)


def _pair_error(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return name
    return next((f"{name}.{key}" for key in ("old", "new") if not _count(value.get(key))), None)


#: The top-level fields the wire format reads besides $schema and meta, in its order, each with
#: what it accepts (None: an object of two counts, old and new, or null).
WIRE_FIELDS: dict[str, Any] = dict(
    id=_count,
    type=_text,
    namespace=_namespace,
    title=_text,
    comment=_text,
    timestamp=_timestamp,
    user=_text,
    bot=_flag,
    minor=_flag,
    patrolled=_flag,
    length=None,
    revision=None,
    server_name=_text,
    wiki=_text,
    log_type=_text,
    log_action=_text,
)


def wire_error(source: dict[str, Any]) -> tuple[str, str] | None:
    """The first (code, field) of a value of the wrong JSON type or range, fields in wire order."""
    schema_key = "$schema" if "$schema" in source else "schema_"
    if not _text(source.get(schema_key)):
        return ("invalid_field", schema_key)
    meta = source.get("meta", ABSENT)
    if meta is ABSENT:
        return ("missing_field", "meta")
    if not isinstance(meta, dict):
        return ("invalid_field", "meta")
    for key in ("id", "dt", "domain", "stream", "schema_uri"):
        if not _text(meta.get(key)):
            return ("invalid_field", f"meta.{key}")
    for key, valid in WIRE_FIELDS.items():
        value = source.get(key)
        field = _pair_error(key, value) if valid is None else (None if valid(value) else key)
        if field is not None:
            return ("invalid_field", field)
    return None


class Reason(Exception):
    def __init__(self, code: str, field: str) -> None:
        super().__init__(code, field)
        self.outcome = ("rejected", code, field)


def _time(value: str | None, field: str) -> datetime:
    if not value:
        raise Reason("missing_field", field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Reason("invalid_field", field) from None
    if parsed.tzinfo is None:
        raise Reason("invalid_field", field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Reason("out_of_range", field) from None


def _filled(value: Any, field: str) -> Any:
    if value is None or value == "":
        raise Reason("missing_field", field)
    return value


def _user_kind(user: str | None, bot: bool) -> UserKind:
    if user is None:
        return UserKind.HIDDEN
    if bot:
        return UserKind.BOT
    try:
        ipaddress.ip_address(user)
        return UserKind.ANONYMOUS
    except ValueError:
        pass
    return UserKind.TEMPORARY if re.match(r"~\d{4}-", user) else UserKind.REGISTERED


def _expected_fields(source: dict[str, Any], received_at: datetime) -> dict[str, Any]:
    """The typed event's fields; raises Reason."""
    meta = source["meta"]
    schema = source.get("$schema") if "$schema" in source else source.get("schema_")
    if schema is not None:
        if not CURRENT.match(schema):
            raise Reason("unsupported_schema", "$schema")
        if not meta.get("stream"):
            raise Reason("missing_field", "meta.stream")
    elif meta.get("schema_uri") is not None and meta["schema_uri"] not in LEGACY:
        raise Reason("unsupported_schema", "meta.schema_uri")
    elif meta.get("schema_uri") is None:
        raise Reason("unsupported_schema", "$schema")
    event_id = _filled(meta.get("id"), "meta.id")
    emitted_at = _time(meta.get("dt"), "meta.dt")
    if _filled(source.get("type"), "type") not in TYPES:
        raise Reason("invalid_field", "type")
    bot = _filled(source.get("bot"), "bot")
    timestamp = source.get("timestamp")
    field = "meta.dt" if timestamp is None else "timestamp"
    try:
        event_time = emitted_at if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise Reason("out_of_range", field) from None
    if not EARLIEST_EVENT_TIME <= event_time <= received_at + FUTURE_TOLERANCE:
        raise Reason("out_of_range", field)
    length, revision = source.get("length") or {}, source.get("revision") or {}
    old, new = length.get("old"), length.get("new")
    return {
        "schema_version": 1,
        "source_schema": schema if schema is not None else meta["schema_uri"],
        "event_id": event_id,
        "event_time": event_time,
        "emitted_at": emitted_at,
        "wiki": _filled(source.get("wiki"), "wiki"),
        "server_name": source.get("server_name") or _filled(meta.get("domain"), "server_name"),
        "type": ChangeType(source["type"]),
        "namespace": _filled(source.get("namespace"), "namespace"),
        "title": _filled(source.get("title"), "title"),
        "rc_id": source.get("id"),
        "user": source.get("user"),
        "user_kind": _user_kind(source.get("user"), bot),
        "bot": bot,
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


def expected_outcome(data: bytes, *, received_at: datetime) -> tuple[Any, ...]:
    """("typed", every field), ("canary", emitted_at) or ("rejected", code, field), for ``data``
    received at ``received_at``."""
    try:
        source = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        return ("rejected", "invalid_json", None)
    if not isinstance(source, dict):
        return ("rejected", "not_an_object", None)
    wrong = wire_error(source)
    if wrong is not None:
        return ("rejected", *wrong)
    meta = source["meta"]
    if meta.get("domain") == "canary":
        try:
            return ("canary", _time(meta.get("dt"), "meta.dt") if meta.get("dt") else None)
        except Reason:
            return ("canary", None)
    try:
        return ("typed", _expected_fields(source, received_at))
    except Reason as reason:
        return reason.outcome
