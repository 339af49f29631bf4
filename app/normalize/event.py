"""bytes -> typed event: a pure function, no I/O. Imports only pydantic, typing_extensions (whose
TypedDict pydantic needs before Python 3.12) and the standard library.

Accepts every official version of the recentchange schema:

- current: ``$schema: /mediawiki/recentchange/1.x.y`` (1.0.0, 1.0.1), ``meta.stream`` required;
- legacy (before 2019): no ``$schema``, ``meta.schema_uri: mediawiki/recentchange/1`` or ``/2``,
  ``null`` where current events omit a field, ``meta.dt`` ending in ``+00:00``.

Both become one :class:`~app.contract.RecentChange`, which records the source schema. What
cannot raises :class:`Rejected` with a precise reason: the dead-letter topic's payload.

One path, on pydantic's public API: pydantic parses and validates the bytes in one pass against
the wire format (the TypedDicts below), whose first error is the reason. The wire format names
what it reads after the typed event's fields, so what it returns becomes the typed event once
plain Python has checked what the envelope requires, each check with its reason, and added the
derived values: the update of a template RecentChange's model_copy(), not validated again.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Required

from pydantic import (
    AliasChoices,
    AliasPath,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from app.contract import Canary, ChangeType, RecentChange, UserKind

#: Events larger than this are dead-lettered unparsed (the largest real ones are ~5 KB).
MAX_EVENT_BYTES = 1 << 20
#: Wikipedia's first edit was in January 2001: nothing in recentchange is older.
EARLIEST_EVENT_TIME = datetime(2001, 1, 1, tzinfo=UTC)
#: How far an event's time may lie after its receipt (clock skew, hand-made fixtures).
FUTURE_TOLERANCE = timedelta(days=1)

CURRENT_SCHEMA = re.compile(r"^/mediawiki/recentchange/1\.\d+\.\d+$")
#: The current schemas seen live, accepted without the pattern (which costs ~0.3 µs an event).
_CURRENT_SCHEMAS = frozenset({"/mediawiki/recentchange/1.0.0", "/mediawiki/recentchange/1.0.1"})
LEGACY_SCHEMAS = frozenset({"mediawiki/recentchange/1", "mediawiki/recentchange/2"})
TEMPORARY_ACCOUNT = re.compile(r"^~\d{4}-")
#: What ipaddress.IPv4Address accepts (four decimal octets, no leading zeros), at a fraction of
#: its cost.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_ADDRESS = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


class RejectCode:
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    OUT_OF_RANGE = "out_of_range"


class Rejected(Exception):
    """Why an event cannot become a typed event. A plain exception (not a frozen dataclass):
    Python sets ``__traceback__`` and ``__notes__`` on it, and pickling rebuilds it from
    ``args``."""

    def __init__(self, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(code, detail, field)
        self.code = code
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        where = f" {self.field}:" if self.field else ":"
        return f"{self.code}{where} {self.detail}"

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "detail": self.detail}


# ---- the wire format: lenient where versions differ, strict about JSON types -----------------
#
# Every field may be absent or null (legacy events send null where current ones omit a field);
# unknown fields are ignored. Fields are named as the typed event's and read from their wire names
# (aliases: a wire key named like a typed field means nothing), so what the wire format returns is
# the typed event's update once normalize() has replaced what it derives (type, event_time from
# timestamp) and added the rest. What normalize() checks reads as None when absent; what it passes
# on unchecked stays absent, and the typed event keeps the template's None.

_STRICT = ConfigDict(strict=True)  # no "6" for 6, no 1.0 for 1, no "true" for true
_Text = Annotated[str | None, Field(default=None)]
_Flag = Annotated[bool | None, Field(default=None)]
_Count = Annotated[int, Field(ge=0)] | None


@with_config(_STRICT)
class _Meta(TypedDict, total=False):
    id: _Text
    dt: _Text
    domain: _Text
    stream: _Text
    schema_uri: str | None


@with_config(_STRICT)
class _Object(TypedDict, total=False):
    """A JSON object, whatever it holds: length and revision, whose counts are read by path."""


@with_config(_STRICT)
class _Event(TypedDict, total=False):
    # "$schema", else "schema_" (the wire format's former field name, always accepted).
    source_schema: Annotated[
        str | None, Field(default=None, validation_alias=AliasChoices("$schema", "schema_"))
    ]
    meta: Required[_Meta]
    rc_id: Annotated[_Count, Field(validation_alias="id")]
    type: _Text
    namespace: Annotated[Annotated[int, Field(ge=-2)] | None, Field(default=None)]
    title: _Text
    comment: str | None
    event_time: Annotated[int | None, Field(default=None, validation_alias="timestamp")]
    user: _Text
    bot: _Flag
    minor: bool | None
    patrolled: bool | None
    length: Annotated[_Object | None, Field(default=None)]
    length_old: Annotated[_Count, Field(validation_alias=AliasPath("length", "old"))]
    length_new: Annotated[_Count, Field(validation_alias=AliasPath("length", "new"))]
    revision: Annotated[_Object | None, Field(default=None)]
    revision_old: Annotated[_Count, Field(validation_alias=AliasPath("revision", "old"))]
    revision_new: Annotated[_Count, Field(validation_alias=AliasPath("revision", "new"))]
    server_name: _Text
    wiki: _Text
    log_type: str | None
    log_action: str | None


#: The wire format's validator: bytes -> _Event, JSON parsed and validated in one pass. Called
#: as the adapter's own validator: TypeAdapter.validate_json() adds a Python call per event.
_validate_wire = TypeAdapter(_Event).validator.validate_json
_CHANGE_TYPES = {change_type.value: change_type for change_type in ChangeType}


def _wire_reason(error: ValidationError) -> Rejected:
    """The reason for the first error the wire format found."""
    first = error.errors(include_url=False)[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        return Rejected(RejectCode.INVALID_JSON, str(first["msg"]))
    if kind == "dict_type" and not loc:
        return Rejected(RejectCode.NOT_AN_OBJECT, "the event is not a JSON object")
    field = ".".join(str(part) for part in loc)
    if kind == "missing":
        return Rejected(RejectCode.MISSING_FIELD, "required", field)
    return Rejected(RejectCode.INVALID_FIELD, str(first["msg"]), field)


# ---- what the envelope requires, each with its reason --------------------------------------


def _source_schema(schema: str | None, meta: _Meta) -> str:
    if schema is not None:
        if schema not in _CURRENT_SCHEMAS and not CURRENT_SCHEMA.match(schema):
            raise Rejected(
                RejectCode.UNSUPPORTED_SCHEMA,
                f"{schema!r} is not a /mediawiki/recentchange/1.x.y schema",
                "$schema",
            )
        if not meta["stream"]:
            raise Rejected(RejectCode.MISSING_FIELD, "required by the schema", "meta.stream")
        return schema
    schema_uri = meta.get("schema_uri")
    if schema_uri in LEGACY_SCHEMAS:
        return schema_uri
    if schema_uri is not None:
        raise Rejected(
            RejectCode.UNSUPPORTED_SCHEMA,
            f"{schema_uri!r} is not a known legacy recentchange schema",
            "meta.schema_uri",
        )
    raise Rejected(RejectCode.UNSUPPORTED_SCHEMA, "neither $schema nor meta.schema_uri", "$schema")


def _missing(field: str) -> Rejected:
    return Rejected(RejectCode.MISSING_FIELD, "required", field)


def _unknown_type(raw_type: str | None) -> Rejected:
    if not raw_type:
        return _missing("type")
    return Rejected(RejectCode.INVALID_FIELD, f"unknown type {raw_type!r}", "type")


def _parse_dt(value: str | None, field: str) -> datetime:
    if not value:
        raise _missing(field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(
            RejectCode.INVALID_FIELD, f"{value!r} is not an ISO-8601 time", field
        ) from None
    if parsed.tzinfo is None:
        raise Rejected(RejectCode.INVALID_FIELD, f"{value!r} has no time zone", field)
    if parsed.tzinfo is UTC:  # most events ("...Z"): already what astimezone() would make
        return parsed
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Rejected(RejectCode.OUT_OF_RANGE, f"{value!r} is not a time", field) from None


def user_kind(user: str | None, bot: bool) -> UserKind:
    """bot (by its flag) > anonymous (an IP address) > temporary (~YYYY-…) > registered."""
    if user is None:
        return _HIDDEN
    if bot:
        return _BOT
    kind = _USER_KINDS.get(user)
    if kind is None:
        kind = _user_kind(user)
        if len(_USER_KINDS) >= _CACHE_SIZE:
            _USER_KINDS.clear()
        _USER_KINDS[user] = kind
    return kind


#: user name -> its kind, and timestamp -> its time: editors and seconds recur (bounded caches,
#: cleared when full). An IPv6 address costs ~2 µs to parse.
_USER_KINDS: dict[str, UserKind] = {}
_CACHE_SIZE = 4096
#: The kinds, looked up once: UserKind.BOT costs ~0.15 µs in Python 3.11 (the enum metaclass's
#: __getattr__ hook slows every attribute lookup on the class).
_HIDDEN, _BOT, _ANONYMOUS, _TEMPORARY, _REGISTERED = (
    UserKind.HIDDEN,
    UserKind.BOT,
    UserKind.ANONYMOUS,
    UserKind.TEMPORARY,
    UserKind.REGISTERED,
)


def _user_kind(user: str) -> UserKind:
    # An IPv6 address has a ":", an IPv4 one none: the parser is tried only where it can succeed
    # (most names are no address, and a failed parse raises).
    if ":" in user:
        try:
            ipaddress.IPv6Address(user)
            return _ANONYMOUS
        except ValueError:
            pass
    elif _IPV4_ADDRESS.fullmatch(user):
        return _ANONYMOUS
    if user[:1] == "~" and TEMPORARY_ACCOUNT.match(user):
        return _TEMPORARY
    return _REGISTERED


_EVENT_TIMES: dict[int, datetime] = {}


def _event_time(timestamp: int | None, emitted_at: datetime, received_at: datetime) -> datetime:
    if timestamp is None:
        event_time, field = emitted_at, "meta.dt"
    else:
        field = "timestamp"
        cached = _EVENT_TIMES.get(timestamp)
        if cached is None:
            try:
                cached = datetime.fromtimestamp(timestamp, UTC)
            except (OverflowError, OSError, ValueError):
                raise Rejected(
                    RejectCode.OUT_OF_RANGE, f"{timestamp} is not a time", "timestamp"
                ) from None
            if len(_EVENT_TIMES) >= _CACHE_SIZE:
                _EVENT_TIMES.clear()
            _EVENT_TIMES[timestamp] = cached
        event_time = cached
    if event_time < EARLIEST_EVENT_TIME:
        raise Rejected(RejectCode.OUT_OF_RANGE, f"{event_time.isoformat()} is before 2001", field)
    if event_time > received_at + FUTURE_TOLERANCE:
        raise Rejected(
            RejectCode.OUT_OF_RANGE,
            f"{event_time.isoformat()} is more than a day after its receipt",
            field,
        )
    return event_time


def _canary(emitted: str | None) -> Canary:
    try:
        return Canary(emitted_at=_parse_dt(emitted, "meta.dt") if emitted else None)
    except Rejected:
        return Canary(emitted_at=None)


#: What every typed event is a copy of. model_copy(update=...) is pydantic's public way to make an
#: instance of values already checked (the wire format checked their types and bounds, normalize()
#: the rest) without validating them again, which would cost more than the copy;
#: model_construct() costs twice as much. Every field is set here (so each event's
#: model_fields_set is RecentChange(...)'s); each optional one holds None, what an event that
#: lacks it gets, as the update leaves it out. Every required one is in the update:
#: tests/app/test_normalize_edges.py checks every field of each event.
_TEMPLATE = RecentChange(
    source_schema="-",
    event_id="-",
    event_time=EARLIEST_EVENT_TIME,
    emitted_at=EARLIEST_EVENT_TIME,
    wiki="-",
    server_name="-",
    type=ChangeType.EDIT,
    namespace=0,
    title="-",
    rc_id=None,
    user=None,
    user_kind=UserKind.HIDDEN,
    bot=False,
    minor=None,
    patrolled=None,
    length_old=None,
    length_new=None,
    length_delta=None,
    revision_old=None,
    revision_new=None,
    log_type=None,
    log_action=None,
    comment=None,
)


#: Bound once: BaseModel's __getattr__ hook slows every attribute lookup on a model.
_copy_template = _TEMPLATE.model_copy


def normalize(
    data: bytes,
    *,
    received_at: datetime | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> RecentChange | Canary:
    """The typed event for one raw SSE payload, or a :class:`Canary`; raises :class:`Rejected`
    with the reason of the first check that fails, in the order below."""
    if len(data) > max_bytes:
        raise Rejected(RejectCode.TOO_LARGE, f"{len(data)} bytes, the limit is {max_bytes}")
    try:
        # What the wire format read, under the typed event's field names: completed below into
        # the update of the template (plain dict operations cost less than building another).
        event: dict[str, Any] = _validate_wire(data)
    except ValidationError as error:
        raise _wire_reason(error) from None
    meta: _Meta = event.pop("meta")
    if meta["domain"] == "canary":
        return _canary(meta["dt"])
    schema = event["source_schema"]
    if schema not in _CURRENT_SCHEMAS or not meta["stream"]:  # else a live one, kept as read
        event["source_schema"] = _source_schema(schema, meta)
    event_id = event["event_id"] = meta["id"]
    if not event_id:
        raise _missing("meta.id")
    emitted_at = event["emitted_at"] = _parse_dt(meta["dt"], "meta.dt")
    change_type = _CHANGE_TYPES.get(event["type"])
    if change_type is None:
        raise _unknown_type(event["type"])
    event["type"] = change_type
    bot = event["bot"]
    if bot is None:
        raise _missing("bot")
    event["event_time"] = _event_time(
        event["event_time"], emitted_at, received_at or datetime.now(UTC)
    )
    if not event["wiki"]:
        raise _missing("wiki")
    if not event["server_name"]:
        event["server_name"] = meta["domain"]
        if not meta["domain"]:
            raise _missing("server_name")
    if event["namespace"] is None:
        raise _missing("namespace")
    if not event["title"]:
        raise _missing("title")
    del event["length"], event["revision"]  # read for their shape, their counts by path
    length_new = event.get("length_new")
    event["length_delta"] = (
        None if length_new is None else length_new - (event.get("length_old") or 0)
    )
    event["user_kind"] = user_kind(event["user"], bot)
    return _copy_template(update=event)


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
