"""bytes -> typed event: a pure function, no I/O. Imports only pydantic and the standard library.

Accepts every official version of the recentchange schema:

- current: ``$schema: /mediawiki/recentchange/1.x.y`` (1.0.0, 1.0.1), ``meta.stream`` required;
- legacy (before 2019): no ``$schema``, ``meta.schema_uri: mediawiki/recentchange/1`` or ``/2``,
  ``null`` where current events omit a field, ``meta.dt`` ending in ``+00:00``.

Both become one :class:`~app.contract.RecentChange`, which records the source schema. What
cannot raises :class:`Rejected` with a precise reason: the dead-letter topic's payload.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    return parsed.astimezone(UTC)


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
    if TEMPORARY_ACCOUNT.match(user):
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
