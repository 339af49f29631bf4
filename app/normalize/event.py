"""bytes -> typed event: a pure function, no I/O. Imports only pydantic (with pydantic_core) and
the standard library.

Accepts every official version of the recentchange schema:

- current: ``$schema: /mediawiki/recentchange/1.x.y`` (1.0.0, 1.0.1), ``meta.stream`` required;
- legacy (before 2019): no ``$schema``, ``meta.schema_uri: mediawiki/recentchange/1`` or ``/2``,
  ``null`` where current events omit a field, ``meta.dt`` ending in ``+00:00``.

Both become one :class:`~app.contract.RecentChange`, which records the source schema. What
cannot raises :class:`Rejected` with a precise reason: the dead-letter topic's payload.

Two paths, one result. :func:`normalize_fast` validates the raw bytes straight into plain values
in one pydantic-core pass (parsing and validating together) and builds the typed event from them:
it handles the common case, a valid event of either envelope, and answers ``None`` for anything
else. :func:`normalize_precise` is the reference: it accepts exactly the same events with equal
results, and finds the precise reason for every rejection. :func:`normalize` is the fast path,
falling back to the precise one; tests/app/test_normalize_fast_path.py holds them to agreement.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import SchemaValidator, core_schema

from app.contract import Canary, ChangeType, RecentChange, UserKind

#: Events larger than this are dead-lettered unparsed (the largest real ones are ~5 KB).
MAX_EVENT_BYTES = 1 << 20
#: Wikipedia's first edit was in January 2001: nothing in recentchange is older.
EARLIEST_EVENT_TIME = datetime(2001, 1, 1, tzinfo=UTC)
#: How far an event's time may lie after its receipt (clock skew, hand-made fixtures).
FUTURE_TOLERANCE = timedelta(days=1)

CURRENT_SCHEMA = re.compile(r"^/mediawiki/recentchange/1\.\d+\.\d+$")
LEGACY_SCHEMAS = frozenset({"mediawiki/recentchange/1", "mediawiki/recentchange/2"})
TEMPORARY_ACCOUNT = re.compile(r"^~\d{4}-")


class RejectCode:
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True)
class Rejected(Exception):
    """Why an event cannot become a typed event."""

    code: str
    detail: str
    field: str | None = None

    def __str__(self) -> str:
        where = f" {self.field}:" if self.field else ":"
        return f"{self.code}{where} {self.detail}"

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "detail": self.detail}


# ---- the wire format: lenient where versions differ, strict about JSON types -----------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


class _Meta(_Wire):
    id: str | None = None
    dt: str | None = None
    domain: str | None = None
    stream: str | None = None
    schema_uri: str | None = None


NonNegative = Annotated[int, Field(ge=0)]


class _Pair(_Wire):
    old: NonNegative | None = None
    new: NonNegative | None = None


class _Event(_Wire):
    schema_: str | None = Field(None, alias="$schema")
    meta: _Meta
    id: NonNegative | None = None
    type: str | None = None
    namespace: Annotated[int, Field(ge=-2)] | None = None
    title: str | None = None
    comment: str | None = None
    timestamp: int | None = None
    user: str | None = None
    bot: bool | None = None
    minor: bool | None = None
    patrolled: bool | None = None
    length: _Pair | None = None
    revision: _Pair | None = None
    server_name: str | None = None
    wiki: str | None = None
    log_type: str | None = None
    log_action: str | None = None


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join("$schema" if part == "$schema" else str(part) for part in loc)


def _parse(data: bytes) -> _Event:
    try:
        return _Event.model_validate_json(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        kind, loc = first["type"], tuple(first["loc"])
        if kind == "json_invalid":
            raise Rejected(RejectCode.INVALID_JSON, str(first["msg"])) from None
        if kind == "model_type" and not loc:
            raise Rejected(RejectCode.NOT_AN_OBJECT, "the event is not a JSON object") from None
        if kind == "missing":
            raise Rejected(RejectCode.MISSING_FIELD, "required", _dotted(loc)) from None
        raise Rejected(RejectCode.INVALID_FIELD, str(first["msg"]), _dotted(loc)) from None


def _source_schema(event: _Event) -> str:
    if event.schema_ is not None:
        if not CURRENT_SCHEMA.match(event.schema_):
            raise Rejected(
                RejectCode.UNSUPPORTED_SCHEMA,
                f"{event.schema_!r} is not a /mediawiki/recentchange/1.x.y schema",
                "$schema",
            )
        if not event.meta.stream:
            raise Rejected(RejectCode.MISSING_FIELD, "required by the schema", "meta.stream")
        return event.schema_
    if event.meta.schema_uri in LEGACY_SCHEMAS:
        return event.meta.schema_uri
    if event.meta.schema_uri is not None:
        raise Rejected(
            RejectCode.UNSUPPORTED_SCHEMA,
            f"{event.meta.schema_uri!r} is not a known legacy recentchange schema",
            "meta.schema_uri",
        )
    raise Rejected(RejectCode.UNSUPPORTED_SCHEMA, "neither $schema nor meta.schema_uri", "$schema")


def _parse_dt(value: str | None, field: str) -> datetime:
    if not value:
        raise Rejected(RejectCode.MISSING_FIELD, "required", field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(
            RejectCode.INVALID_FIELD, f"{value!r} is not an ISO-8601 time", field
        ) from None
    if parsed.tzinfo is None:
        raise Rejected(RejectCode.INVALID_FIELD, f"{value!r} has no time zone", field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Rejected(RejectCode.OUT_OF_RANGE, f"{value!r} is not a time", field) from None


def _require(value: Any, field: str) -> Any:
    if value is None or value == "":
        raise Rejected(RejectCode.MISSING_FIELD, "required", field)
    return value


def user_kind(user: str | None, bot: bool) -> UserKind:
    """bot (by its flag) > anonymous (an IP address) > temporary (~YYYY-…) > registered."""
    if user is None:
        return UserKind.HIDDEN
    if bot:
        return UserKind.BOT
    if user[:1].isdigit() or ":" in user:  # cheap pre-check: most names are not addresses
        try:
            ipaddress.ip_address(user)
            return UserKind.ANONYMOUS
        except ValueError:
            pass
    if user[:1] == "~" and TEMPORARY_ACCOUNT.match(user):
        return UserKind.TEMPORARY
    return UserKind.REGISTERED


def _event_time(event: _Event, emitted_at: datetime, received_at: datetime) -> datetime:
    if event.timestamp is None:
        event_time = emitted_at
    else:
        try:
            event_time = datetime.fromtimestamp(event.timestamp, UTC)
        except (OverflowError, OSError, ValueError):
            raise Rejected(
                RejectCode.OUT_OF_RANGE, f"{event.timestamp} is not a time", "timestamp"
            ) from None
    field = "timestamp" if event.timestamp is not None else "meta.dt"
    if event_time < EARLIEST_EVENT_TIME:
        raise Rejected(RejectCode.OUT_OF_RANGE, f"{event_time.isoformat()} is before 2001", field)
    if event_time > received_at + FUTURE_TOLERANCE:
        raise Rejected(
            RejectCode.OUT_OF_RANGE,
            f"{event_time.isoformat()} is more than a day after its receipt",
            field,
        )
    return event_time


def normalize(
    data: bytes,
    *,
    received_at: datetime | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> RecentChange | Canary:
    """The typed event for one raw SSE payload, or a :class:`Canary`; raises :class:`Rejected`."""
    if len(data) > max_bytes:
        raise Rejected(RejectCode.TOO_LARGE, f"{len(data)} bytes, the limit is {max_bytes}")
    received_at = received_at or datetime.now(UTC)
    typed = _fast(data, received_at)
    return normalize_precise(data, received_at=received_at) if typed is None else typed


def normalize_precise(
    data: bytes,
    *,
    received_at: datetime | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> RecentChange | Canary:
    """:func:`normalize` without its fast path: every check in turn, each with its reason."""
    if len(data) > max_bytes:
        raise Rejected(RejectCode.TOO_LARGE, f"{len(data)} bytes, the limit is {max_bytes}")
    event = _parse(data)
    if event.meta.domain == "canary":
        emitted = event.meta.dt
        try:
            return Canary(emitted_at=_parse_dt(emitted, "meta.dt") if emitted else None)
        except Rejected:
            return Canary(emitted_at=None)
    received_at = received_at or datetime.now(UTC)
    source_schema = _source_schema(event)
    event_id = _require(event.meta.id, "meta.id")
    emitted_at = _parse_dt(event.meta.dt, "meta.dt")
    raw_type = _require(event.type, "type")
    try:
        change_type = ChangeType(raw_type)
    except ValueError:
        raise Rejected(RejectCode.INVALID_FIELD, f"unknown type {raw_type!r}", "type") from None
    bot = _require(event.bot, "bot")
    length, revision = event.length or _Pair(), event.revision or _Pair()
    delta = None if length.new is None else length.new - (length.old or 0)
    # The wire model already enforced the JSON types and ranges; RecentChange checks the rest.
    return RecentChange(
        source_schema=source_schema,
        event_id=event_id,
        event_time=_event_time(event, emitted_at, received_at),
        emitted_at=emitted_at,
        wiki=_require(event.wiki, "wiki"),
        server_name=event.server_name or _require(event.meta.domain, "server_name"),
        type=change_type,
        namespace=_require(event.namespace, "namespace"),
        title=_require(event.title, "title"),
        rc_id=event.id,
        user=event.user,
        user_kind=user_kind(event.user, bot),
        bot=bot,
        minor=event.minor,
        patrolled=event.patrolled,
        length_old=length.old,
        length_new=length.new,
        length_delta=delta,
        revision_old=revision.old,
        revision_new=revision.new,
        log_type=event.log_type,
        log_action=event.log_action,
        comment=event.comment,
    )


# ---- the fast path: one pydantic-core pass from bytes to values, then cheap Python -------------
#
# _FAST_WIRE reads every wire field _Event reads, with the same types and bounds (so the same JSON
# passes both), and requires what normalize_precise requires (meta.id, meta.dt, type, namespace,
# title, bot, server_name, wiki): an event without one of them fails here and takes the precise
# path, which names the reason. Any other doubt in _fast() answers None as well.
#
# Its output becomes the event's __dict__ as it is: RecentChange's fields, in RecentChange's order
# (the order of repr() and model_dump()). Each reads the wire value it is made from: most are
# final as read; a derived one holds its source (emitted_at the meta object, length_old the
# length object...) or nothing, until _fast() puts the derived value in its place.
# tests/app/test_normalize_fast_path.py holds the two paths to identical results on synthetic and
# hand-written events, the bad-input corpus and variations of both; tests/recorded/ does the same
# over every real recording it is given.

_cs = core_schema


def _required(
    schema: core_schema.CoreSchema, wire: str | list[str | int] | None = None
) -> core_schema.TypedDictField:
    return _cs.typed_dict_field(schema, required=True, validation_alias=wire)


def _optional(
    schema: core_schema.CoreSchema, wire: str | list[list[str | int]] | None = None
) -> core_schema.TypedDictField:
    return _cs.typed_dict_field(
        _cs.with_default_schema(_cs.nullable_schema(schema), default=None),
        required=False,
        validation_alias=wire,
    )


def _object(fields: dict[str, core_schema.TypedDictField]) -> core_schema.TypedDictSchema:
    return _cs.typed_dict_schema(fields, strict=True, extra_behavior="ignore")


def _derived(field: str) -> core_schema.TypedDictField:
    """An empty slot for a derived field (read from a key no real event has)."""
    return _cs.typed_dict_field(
        _cs.with_default_schema(_cs.none_schema(), default=None),
        required=False,
        validation_alias=f"\0{field}",
    )


# Strict, as _Wire is: no "6" for 6, no 1.0 for 1, no "true" for true.
_text, _bool = _cs.str_schema(strict=True), _cs.bool_schema(strict=True)
_filled = _cs.str_schema(min_length=1, strict=True)  # what _require() accepts of a string
_count = _cs.int_schema(ge=0, strict=True)
_meta = _object(
    {
        "id": _required(_filled),
        "dt": _required(_filled),
        "domain": _optional(_text),
        "stream": _optional(_text),
        "schema_uri": _optional(_text),
    }
)
_pair = _object({"old": _optional(_count), "new": _optional(_count)})
_FAST_WIRE_SCHEMA = _object(
    {
        "schema_version": _derived("schema_version"),
        # "$schema", else the field's name "schema_", as _Event (populate_by_name) reads it.
        "source_schema": _optional(_text, [["$schema"], ["schema_"]]),
        "event_id": _required(_filled, ["meta", "id"]),
        "event_time": _optional(_cs.int_schema(strict=True), "timestamp"),  # its source
        "emitted_at": _required(_meta, "meta"),  # its source: meta.dt, and the envelope
        "wiki": _required(_filled),
        "server_name": _required(_filled),
        "type": _required(
            _cs.enum_schema(ChangeType, list(ChangeType), sub_type="str", strict=True)
        ),
        "namespace": _required(_cs.int_schema(ge=-2, strict=True)),
        "title": _required(_filled),
        "rc_id": _optional(_count, "id"),
        "user": _optional(_text),
        "user_kind": _derived("user_kind"),
        "bot": _required(_bool),
        "minor": _optional(_bool),
        "patrolled": _optional(_bool),
        "length_old": _optional(_pair, "length"),  # its source: the length object
        "length_new": _optional(_count, [["length", "new"]]),
        "length_delta": _derived("length_delta"),
        "revision_old": _optional(_pair, "revision"),  # its source: the revision object
        "revision_new": _optional(_count, [["revision", "new"]]),
        "log_type": _optional(_text),
        "log_action": _optional(_text),
        "comment": _optional(_text),
    }
)
_FAST_WIRE = SchemaValidator(_FAST_WIRE_SCHEMA)

#: What RecentChange(...) in normalize_precise records as set: every field it passes. One set is
#: shared by every event of the fast path (a copy per event costs ~1 µs, an eighth of the path):
#: pydantic adds to it only when a field is assigned, which a frozen RecentChange refuses, and
#: gives copies (model_copy) their own.
_FIELDS_SET = set(RecentChange.model_fields) - {"schema_version"}
_new_object = object.__new__
_set_slot = object.__setattr__
_from_iso = datetime.fromisoformat
_from_timestamp = datetime.fromtimestamp
#: timestamp -> its time: events of the same second share one (a bounded cache, cleared when full).
_EVENT_TIMES: dict[int, datetime] = {}
_EVENT_TIMES_SIZE = 4096
_HIDDEN, _BOT = UserKind.HIDDEN, UserKind.BOT


def _fast(data: bytes, received_at: datetime) -> RecentChange | None:
    try:
        values = _FAST_WIRE.validate_json(data)
    except ValidationError:
        return None
    meta = values["emitted_at"]
    if meta["domain"] == "canary":
        return None
    source_schema = values["source_schema"]
    if source_schema is None:
        source_schema = meta["schema_uri"]
        if source_schema not in LEGACY_SCHEMAS:
            return None
        values["source_schema"] = source_schema
    elif not (meta["stream"] and CURRENT_SCHEMA.match(source_schema)):
        return None
    try:
        emitted_at = _from_iso(meta["dt"])
        if emitted_at.tzinfo is None:
            return None
        emitted_at = emitted_at.astimezone(UTC)
        timestamp = values["event_time"]
        if timestamp is None:
            event_time = emitted_at
        elif (cached := _EVENT_TIMES.get(timestamp)) is not None:
            event_time = cached
        else:
            event_time = _from_timestamp(timestamp, UTC)
            if len(_EVENT_TIMES) >= _EVENT_TIMES_SIZE:
                _EVENT_TIMES.clear()
            _EVENT_TIMES[timestamp] = event_time
    except (ValueError, OverflowError, OSError):
        return None
    if event_time < EARLIEST_EVENT_TIME or event_time > received_at + FUTURE_TOLERANCE:
        return None
    values["schema_version"] = 1
    values["event_time"] = event_time
    values["emitted_at"] = emitted_at
    user = values["user"]
    values["user_kind"] = (
        _HIDDEN if user is None else _BOT if values["bot"] else user_kind(user, False)
    )
    length = values["length_old"]
    if length is not None:
        values["length_old"] = length_old = length["old"]
        length_new = values["length_new"]
        if length_new is not None:
            values["length_delta"] = length_new - (length_old or 0)
    revision = values["revision_old"]
    if revision is not None:
        values["revision_old"] = revision["old"]
    # Every value is of its field's type and within its bounds (checked above, as
    # normalize_precise checks them), so the event is built as model_construct() builds one,
    # without validating it a second time (which would double the fast path's time).
    typed = _new_object(RecentChange)
    _set_slot(typed, "__dict__", values)
    _set_slot(typed, "__pydantic_fields_set__", _FIELDS_SET)
    _set_slot(typed, "__pydantic_extra__", None)
    _set_slot(typed, "__pydantic_private__", None)
    return typed


def normalize_fast(
    data: bytes,
    *,
    received_at: datetime | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> RecentChange | None:
    """:func:`normalize`'s fast path alone: the typed event, or ``None`` when the event is not a
    plain valid change (a canary, a rejection, anything unusual): :func:`normalize_precise`
    then decides. When it answers, the precise path answers an equal event."""
    if len(data) > max_bytes:
        return None
    return _fast(data, received_at or datetime.now(UTC))


@dataclass(frozen=True)
class Filters:
    """Which valid events go to the typed topic; an empty collection means all."""

    namespaces: Collection[int] = ()
    wikis: Collection[str] = ()
    types: Collection[str] = ()

    def accept(self, event: RecentChange) -> bool:
        return (
            (not self.namespaces or event.namespace in self.namespaces)
            and (not self.wikis or event.wiki in self.wikis)
            and (not self.types or event.type in self.types)
        )
