"""bytes -> typed event: a pure function, no I/O. Imports only pydantic, typing_extensions (whose
TypedDict pydantic needs before Python 3.12) and the standard library.

Accepts every official version of the recentchange schema:

- current: ``$schema: /mediawiki/recentchange/1.x.y`` (1.0.0, 1.0.1), ``meta.stream`` required;
- legacy (before 2019): no ``$schema``, ``meta.schema_uri: mediawiki/recentchange/1`` or ``/2``,
  ``null`` where current events omit a field, ``meta.dt`` ending in ``+00:00``.

Both become one :class:`~app.contract.RecentChange`, which records the source schema. What
cannot raises :class:`Rejected` with a precise reason: the dead-letter topic's payload.

One path, on pydantic's public API: pydantic parses and validates the bytes in one pass against
the wire format (the TypedDicts below), whose first error is the reason; plain Python then checks
what the envelope requires, each check with its reason, and derives the typed event's values,
which become a RecentChange without being validated again.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Required

from pydantic import AliasChoices, ConfigDict, Field, TypeAdapter, ValidationError, with_config
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
# Every field may be absent or null (legacy events send null where current ones omit a field):
# either way it reads as None, and normalize() names what is missing. Unknown fields are ignored.

_STRICT = ConfigDict(strict=True)  # no "6" for 6, no 1.0 for 1, no "true" for true
_Text = Annotated[str | None, Field(default=None)]
_Flag = Annotated[bool | None, Field(default=None)]
_Count = Annotated[Annotated[int, Field(ge=0)] | None, Field(default=None)]


@with_config(_STRICT)
class _Meta(TypedDict, total=False):
    id: _Text
    dt: _Text
    domain: _Text
    stream: _Text
    schema_uri: _Text


@with_config(_STRICT)
class _Pair(TypedDict, total=False):
    old: _Count
    new: _Count


@with_config(_STRICT)
class _Event(TypedDict, total=False):
    # "$schema", else "schema_": the wire format has always read its field name too.
    schema_: Annotated[
        str | None, Field(default=None, validation_alias=AliasChoices("$schema", "schema_"))
    ]
    meta: Required[_Meta]
    id: _Count
    type: _Text
    namespace: Annotated[Annotated[int, Field(ge=-2)] | None, Field(default=None)]
    title: _Text
    comment: _Text
    timestamp: Annotated[int | None, Field(default=None)]
    user: _Text
    bot: _Flag
    minor: _Flag
    patrolled: _Flag
    length: Annotated[_Pair | None, Field(default=None)]
    revision: Annotated[_Pair | None, Field(default=None)]
    server_name: _Text
    wiki: _Text
    log_type: _Text
    log_action: _Text


#: The wire format's validator: bytes -> _Event, JSON parsed and validated in one pass. Called
#: as the adapter's own validator: TypeAdapter.validate_json() adds a Python call per event.
_validate_wire = TypeAdapter(_Event).validator.validate_json
_NO_PAIR = _Pair(old=None, new=None)
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
    schema_uri = meta["schema_uri"]
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
        return UserKind.HIDDEN
    if bot:
        return UserKind.BOT
    kind = _USER_KINDS.get(user)
    if kind is None:
        kind = _user_kind(user)
        if len(_USER_KINDS) >= _CACHE_SIZE:
            _USER_KINDS.clear()
        _USER_KINDS[user] = kind
    return kind


#: user name -> its kind, and timestamp -> its time: editors and seconds recur (bounded caches,
#: cleared when full). An address costs ~2 µs to parse, a third of the rest of normalize().
_USER_KINDS: dict[str, UserKind] = {}
_CACHE_SIZE = 4096


def _user_kind(user: str) -> UserKind:
    # An IPv6 address has a ":", an IPv4 one none and a leading digit: each parser is tried only
    # where it can succeed (most names are no address, and a failed parse raises).
    if ":" in user:
        try:
            ipaddress.IPv6Address(user)
            return UserKind.ANONYMOUS
        except ValueError:
            pass
    elif user[:1].isdigit():
        try:
            ipaddress.IPv4Address(user)
            return UserKind.ANONYMOUS
        except ValueError:
            pass
    if user[:1] == "~" and TEMPORARY_ACCOUNT.match(user):
        return UserKind.TEMPORARY
    return UserKind.REGISTERED


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


#: What every typed event is a copy of, with every field but schema_version replaced.
#: model_copy(update=...) is pydantic's public way to make an instance of values already checked
#: (the wire format checked their types and bounds, normalize() the rest) without validating them
#: a second time, which would cost about as much as the rest of normalize(); model_construct()
#: costs twice as much as a copy. Every field is set here, as normalize() sets them all (so each
#: event's model_fields_set is RecentChange(...)'s). A field left out of the update would keep
#: its placeholder here: tests/app/test_normalize_edges.py checks every field of each event.
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
        event: _Event = _validate_wire(data)
    except ValidationError as error:
        raise _wire_reason(error) from None
    meta = event["meta"]
    if meta["domain"] == "canary":
        return _canary(meta["dt"])
    source_schema = _source_schema(event["schema_"], meta)
    event_id = meta["id"]
    if not event_id:
        raise _missing("meta.id")
    emitted_at = _parse_dt(meta["dt"], "meta.dt")
    raw_type = event["type"]
    if not raw_type:
        raise _missing("type")
    change_type = _CHANGE_TYPES.get(raw_type)
    if change_type is None:
        raise Rejected(RejectCode.INVALID_FIELD, f"unknown type {raw_type!r}", "type")
    bot = event["bot"]
    if bot is None:
        raise _missing("bot")
    event_time = _event_time(event["timestamp"], emitted_at, received_at or datetime.now(UTC))
    wiki, server_name = event["wiki"], event["server_name"] or meta["domain"]
    namespace, title = event["namespace"], event["title"]
    if not wiki:
        raise _missing("wiki")
    if not server_name:
        raise _missing("server_name")
    if namespace is None:
        raise _missing("namespace")
    if not title:
        raise _missing("title")
    length, revision = event["length"] or _NO_PAIR, event["revision"] or _NO_PAIR
    length_old, length_new = length["old"], length["new"]
    user = event["user"]
    return _TEMPLATE.model_copy(
        update={
            "source_schema": source_schema,
            "event_id": event_id,
            "event_time": event_time,
            "emitted_at": emitted_at,
            "wiki": wiki,
            "server_name": server_name,
            "type": change_type,
            "namespace": namespace,
            "title": title,
            "rc_id": event["id"],
            "user": user,
            "user_kind": user_kind(user, bot),
            "bot": bot,
            "minor": event["minor"],
            "patrolled": event["patrolled"],
            "length_old": length_old,
            "length_new": length_new,
            "length_delta": None if length_new is None else length_new - (length_old or 0),
            "revision_old": revision["old"],
            "revision_new": revision["new"],
            "log_type": event["log_type"],
            "log_action": event["log_action"],
            "comment": event["comment"],
        }
    )


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
