"""normalize()'s fast path against its precise path: the same answer for every input.

normalize_fast() answers a RecentChange or None ("not mine"); normalize_precise() is the
reference. The fast path may decline anything, but what it answers must be identical to what the
precise path answers, and normalize() (fast, then precise) must answer exactly as the precise path:
the same event, the same Canary, or the same rejection (code, field and detail).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.contract import Canary, RecentChange, UserKind
from app.normalize import (
    EARLIEST_EVENT_TIME,
    FUTURE_TOLERANCE,
    Rejected,
    normalize,
    normalize_fast,
    normalize_precise,
)
from app.normalize import event as normalize_module
from infra.replay.synthetic import Role
from tests import events
from tests.app import examples
from tests.app.bad_input import corpus, odd_but_valid
from tests.app.examples import EXAMPLES, encoded

RECEIVED = datetime(2026, 6, 21, tzinfo=UTC)
#: The synthetic stream starts the day before RECEIVED, so its events are in range.
START = datetime(2026, 6, 20, 12, tzinfo=UTC)


def outcome(normalizer: Any, data: bytes) -> tuple[Any, ...]:
    try:
        result = normalizer(data, received_at=RECEIVED)
    except Rejected as rejection:
        return ("rejected", rejection.code, rejection.field, rejection.detail)
    return ("typed", result)


def assert_identical(fast: RecentChange, precise: RecentChange) -> None:
    assert type(fast) is RecentChange and type(precise) is RecentChange
    assert fast == precise
    # The same values in the same order, of the same types (datetimes in the same zone object).
    assert list(fast.__dict__) == list(precise.__dict__)
    for name, value in precise.__dict__.items():
        assert type(fast.__dict__[name]) is type(value), name
        assert fast.__dict__[name] == value, name
    assert fast.event_time.tzinfo is precise.event_time.tzinfo is UTC
    assert fast.emitted_at.tzinfo is precise.emitted_at.tzinfo is UTC
    assert fast.model_fields_set == precise.model_fields_set
    assert fast.__pydantic_extra__ == precise.__pydantic_extra__
    assert fast.__pydantic_private__ == precise.__pydantic_private__
    assert repr(fast) == repr(precise)
    assert fast.model_dump_json() == precise.model_dump_json()
    assert fast.model_dump() == precise.model_dump()
    # Valid by the contract, though built without validating it again.
    assert RecentChange.model_validate(fast.model_dump()) == fast


def agree(data: bytes) -> RecentChange | None:
    """Checks both paths on one payload; returns what the fast path answered."""
    precise = outcome(normalize_precise, data)
    fast = normalize_fast(data, received_at=RECEIVED)
    if fast is not None:
        assert precise[0] == "typed", (
            f"the fast path accepted what the precise path rejects: {precise}"
        )
        assert_identical(fast, precise[1])
    combined = outcome(normalize, data)
    assert combined[0] == precise[0]
    if combined[0] == "rejected":
        assert combined == precise
    elif isinstance(precise[1], Canary):
        assert combined[1] == precise[1] and type(combined[1]) is Canary
    else:
        assert_identical(combined[1], precise[1])
    return fast


def edited(base: bytes, **changes: Any) -> bytes:
    """``base`` with fields set (dotted names, ``meta__dt`` for ``meta.dt``) or, for ``...``,
    removed."""
    event = orjson.loads(base)
    for dotted, value in changes.items():
        *parents, last = dotted.replace("__", ".").split(".")
        target = event
        for part in parents:
            target = target[part]
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return json.dumps(event).encode()  # not orjson: it refuses integers beyond 64 bits


CURRENT_EDIT = encoded(examples.current_edit())  # a commons bot edit
LEGACY_EDIT = encoded(examples.legacy_edit())
#: The current edit's times (hand-written in tests/app/examples.py).
TIMESTAMP = examples.CURRENT_EDIT_TIMESTAMP  # 2026-06-20T11:22:31Z


# ---- every input we have ------------------------------------------------------------------------


@pytest.mark.parametrize("legacy_share", [0.0, 0.5, 1.0])
def test_every_synthetic_event_takes_the_fast_path_with_an_identical_result(
    legacy_share: float,
) -> None:
    for number, data in enumerate(events.synthetic(2000, start=START, legacy_share=legacy_share)):
        assert agree(data) is not None, f"position {number} fell back to the precise path"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_takes_the_fast_path_with_an_identical_result(name: str) -> None:
    assert agree(encoded(EXAMPLES[name]())) is not None


def test_synthetic_canaries_fall_back_to_the_same_canary() -> None:
    stream = events.stream(start=START, canary_interval=timedelta(seconds=5))
    canaries = [data for label, data in stream.labelled(1000) if label.role is Role.CANARY]
    assert canaries
    for data in canaries:
        assert agree(data) is None
        assert isinstance(normalize(data, received_at=RECEIVED), Canary)


@pytest.mark.parametrize("item", corpus(), ids=lambda item: item.name)
def test_bad_input_falls_back_to_the_same_reason(item) -> None:
    assert normalize_fast(item.data, received_at=RECEIVED) is None
    agree(item.data)
    assert outcome(normalize, item.data)[1:3] == (item.code, item.field)


@pytest.mark.parametrize("name", sorted(odd_but_valid()))
def test_odd_but_valid_names_take_the_fast_path(name: str) -> None:
    assert agree(odd_but_valid()[name]) is not None


ODD_VALUES: list[Any] = [
    ...,
    None,
    "",
    "x",
    "edit",
    "6",
    "true",
    "null",
    0,
    -1,
    -3,
    1,
    6.0,
    10**20,
    1.5,
    True,
    False,
    [],
    {},
    {"old": 1},
]
BASES = {
    "current edit": CURRENT_EDIT,
    "current new page": encoded(examples.current_new_page()),
    "current log": encoded(examples.current_log_without_id()),
    "current categorize": encoded(examples.current_categorize()),
    "legacy edit": LEGACY_EDIT,
    "legacy schema 2": encoded(examples.legacy_schema_2_edit()),
    "legacy new page": encoded(examples.legacy_new_page()),
    "legacy log": encoded(examples.legacy_log_with_null_id()),
}


@pytest.mark.parametrize("base", sorted(BASES))
def test_every_field_set_to_odd_values_agrees(base: str) -> None:
    """Each wire field, in turn absent, null, empty, of every JSON type, out of range."""
    source = orjson.loads(BASES[base])
    fields = [
        *source,
        "$schema",
        "schema_",
        *(f"meta.{key}" for key in ("id", "dt", "domain", "stream", "schema_uri")),
        *(f"{pair}.{key}" for pair in ("length", "revision") for key in ("old", "new")),
    ]
    for field in fields:
        for value in ODD_VALUES:
            if "." in field and not isinstance(source.get(field.split(".")[0]), dict):
                continue
            agree(edited(BASES[base], **{field: value}))


# ---- targeted edge cases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "meta_dt",
    [
        "2026-06-20T11:22:33Z",
        "2026-06-20T11:22:33.417Z",
        "2026-06-20T11:22:33.123456Z",
        "2026-06-20T11:22:33+00:00",
        "2026-06-20T13:22:33+02:00",
        "2026-06-20T06:22:33-05:00",
        "2026-06-20 11:22:33Z",
        "20260620T112233Z",
    ],
)
@pytest.mark.parametrize("timestamp", [..., None, TIMESTAMP])
def test_meta_dt_in_every_form(meta_dt: str, timestamp: Any) -> None:
    fast = agree(edited(CURRENT_EDIT, meta__dt=meta_dt, timestamp=timestamp))
    assert fast is not None
    assert fast.emitted_at.utcoffset() == timedelta(0)
    if timestamp in (..., None):
        assert fast.event_time == fast.emitted_at


@pytest.mark.parametrize(
    "meta_dt", ["2026-06-20T11:22:33", "2026-06-20T11:22:33.417", "2026-06-20", "yesterday", ""]
)
@pytest.mark.parametrize("timestamp", [..., TIMESTAMP])
def test_meta_dt_without_time_zone_or_not_a_time_falls_back(meta_dt: str, timestamp: Any) -> None:
    data = edited(CURRENT_EDIT, meta__dt=meta_dt, timestamp=timestamp)
    assert normalize_fast(data, received_at=RECEIVED) is None
    agree(data)
    assert outcome(normalize, data)[1] in ("invalid_field", "missing_field")


def test_timestamp_absent_uses_meta_dt() -> None:
    fast = agree(edited(CURRENT_EDIT, timestamp=...))
    assert fast is not None
    assert fast.event_time == fast.emitted_at == examples.CURRENT_EDIT_EMITTED


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        (int(EARLIEST_EVENT_TIME.timestamp()), True),
        (int(EARLIEST_EVENT_TIME.timestamp()) - 1, False),
        (int((RECEIVED + FUTURE_TOLERANCE).timestamp()), True),
        (int((RECEIVED + FUTURE_TOLERANCE).timestamp()) + 1, False),
        (-1, False),
        (10**18, False),
        (10**40, False),
    ],
)
def test_timestamp_bounds(timestamp: int, accepted: bool) -> None:
    fast = agree(edited(CURRENT_EDIT, timestamp=timestamp))
    assert (fast is not None) is accepted


def test_repeated_timestamps_share_a_cached_time_and_the_cache_stays_bounded() -> None:
    start = int(EARLIEST_EVENT_TIME.timestamp())
    count = normalize_module._EVENT_TIMES_SIZE + 10
    template = orjson.loads(CURRENT_EDIT)
    for offset in range(count):
        template["timestamp"] = start + offset
        fast = normalize_fast(orjson.dumps(template), received_at=RECEIVED)
        assert fast is not None
        assert fast.event_time == datetime.fromtimestamp(start + offset, UTC)
        assert len(normalize_module._EVENT_TIMES) <= normalize_module._EVENT_TIMES_SIZE
    again = agree(edited(CURRENT_EDIT, timestamp=start + count - 1))
    assert again is not None and again.event_time == datetime.fromtimestamp(start + count - 1, UTC)


@pytest.mark.parametrize("length", [{"new": 100}, {"old": 100}, {}, None, ...])
def test_length_new_absent_or_length_missing(length: Any) -> None:
    fast = agree(edited(CURRENT_EDIT, length=length))
    assert fast is not None
    new = length.get("new") if isinstance(length, dict) else None
    old = length.get("old") if isinstance(length, dict) else None
    assert (fast.length_old, fast.length_new) == (old, new)
    assert fast.length_delta == (None if new is None else new)


@pytest.mark.parametrize("revision", [{"new": 100}, {}, None, ...])
def test_revision_missing(revision: Any) -> None:
    assert agree(edited(CURRENT_EDIT, revision=revision)) is not None


@pytest.mark.parametrize("user", [None, ...])
@pytest.mark.parametrize("bot", [True, False])
def test_user_null_or_absent_is_hidden(user: Any, bot: bool) -> None:
    fast = agree(edited(CURRENT_EDIT, user=user, bot=bot))
    assert fast is not None and fast.user is None and fast.user_kind == UserKind.HIDDEN


@pytest.mark.parametrize(
    ("user", "bot", "kind"),
    [
        (examples.IPV4_USER, True, UserKind.BOT),
        (examples.IPV6_USER, True, UserKind.BOT),
        (examples.IPV4_USER, False, UserKind.ANONYMOUS),
        (examples.IPV6_USER, False, UserKind.ANONYMOUS),
        (examples.TEMPORARY_USER, True, UserKind.BOT),
        (examples.TEMPORARY_USER, False, UserKind.TEMPORARY),
        ("~tilde user", False, UserKind.REGISTERED),
        ("2001 Odyssey", False, UserKind.REGISTERED),
        ("", False, UserKind.REGISTERED),
    ],
)
def test_user_kinds(user: str, bot: bool, kind: UserKind) -> None:
    fast = agree(edited(CURRENT_EDIT, user=user, bot=bot))
    assert fast is not None and fast.user_kind == kind


@pytest.mark.parametrize(("namespace", "accepted"), [(-1, True), (-2, True), (-3, False)])
def test_negative_namespaces(namespace: int, accepted: bool) -> None:
    fast = agree(edited(CURRENT_EDIT, namespace=namespace))
    assert (fast is not None) is accepted
    if accepted:
        assert fast is not None and fast.namespace == namespace


@pytest.mark.parametrize("schema_uri", ["mediawiki/recentchange/1", "mediawiki/recentchange/2"])
def test_legacy_envelopes_take_the_fast_path(schema_uri: str) -> None:
    fast = agree(edited(LEGACY_EDIT, meta__schema_uri=schema_uri))
    assert fast is not None and fast.source_schema == schema_uri


@pytest.mark.parametrize(
    "changes",
    [
        {"meta.schema_uri": "mediawiki/recentchange/3"},  # unknown legacy schema
        {"meta.schema_uri": ...},  # neither $schema nor meta.schema_uri
        {"meta.schema_uri": None},
        {"$schema": "mediawiki/recentchange/1"},  # a legacy name where $schema goes
        {"$schema": "/mediawiki/recentchange/1.0.0"},  # a current schema without meta.stream
    ],
)
def test_unusual_legacy_envelopes_fall_back(changes: dict[str, Any]) -> None:
    data = edited(LEGACY_EDIT, **changes)
    assert normalize_fast(data, received_at=RECEIVED) is None
    assert agree(data) is None
    assert outcome(normalize, data)[1] in ("unsupported_schema", "missing_field")


@pytest.mark.parametrize(
    "schema",
    [
        "/mediawiki/recentchange/1.0.1",
        "/mediawiki/recentchange/1.12.3",
        "/mediawiki/recentchange/1.0.0\n",  # the pattern's $ allows a final newline
        "/mediawiki/recentchange/2.0.0",
        "/mediawiki/recentchange/1.0",
    ],
)
def test_current_schema_versions(schema: str) -> None:
    agree(edited(CURRENT_EDIT, **{"$schema": schema}))


def test_schema_by_field_name_and_duplicate_keys_agree() -> None:
    no_schema = orjson.loads(CURRENT_EDIT)
    schema = no_schema.pop("$schema")
    by_name = orjson.dumps({"schema_": schema, **no_schema})
    assert agree(by_name) is not None
    both = orjson.dumps({"schema_": "junk", **orjson.loads(CURRENT_EDIT)})
    assert agree(both) is not None
    null_schema = orjson.dumps({"$schema": None, "schema_": schema, **no_schema})
    assert agree(null_schema) is None  # "$schema": null wins, and there is no meta.schema_uri
    duplicated = CURRENT_EDIT.replace(b'"type":"edit"', b'"type":"new","type":"edit"')
    assert duplicated != CURRENT_EDIT
    assert agree(duplicated) is not None
    duplicated_meta = CURRENT_EDIT.replace(b'"meta":{', b'"meta":{"id":"first",')
    fast = agree(duplicated_meta)
    assert fast is not None and fast.event_id == examples.CURRENT_EDIT_ID


def test_canary_falls_back_to_a_canary() -> None:
    data = edited(CURRENT_EDIT, meta__domain="canary")
    assert normalize_fast(data, received_at=RECEIVED) is None
    agree(data)
    assert isinstance(normalize(data, received_at=RECEIVED), Canary)


def test_empty_server_name_falls_back_to_meta_domain() -> None:
    data = edited(CURRENT_EDIT, server_name="")
    assert normalize_fast(data, received_at=RECEIVED) is None
    agree(data)
    typed = normalize(data, received_at=RECEIVED)
    assert isinstance(typed, RecentChange) and typed.server_name == "commons.wikimedia.org"


def test_too_large_falls_back_to_the_precise_reason() -> None:
    assert normalize_fast(CURRENT_EDIT, received_at=RECEIVED, max_bytes=100) is None
    with pytest.raises(Rejected) as caught:
        normalize(CURRENT_EDIT, received_at=RECEIVED, max_bytes=100)
    assert caught.value.code == "too_large"


def test_received_at_defaults_to_now() -> None:
    data = edited(CURRENT_EDIT, timestamp=int(datetime.now(UTC).timestamp()))
    assert isinstance(normalize_fast(data), RecentChange)
    assert isinstance(normalize(data), RecentChange)


def test_fast_events_are_frozen_and_their_shared_fields_set_stays_untouched() -> None:
    first = normalize_fast(CURRENT_EDIT, received_at=RECEIVED)
    second = normalize_fast(LEGACY_EDIT, received_at=RECEIVED)
    assert first is not None and second is not None
    fields_set = set(first.model_fields_set)
    with pytest.raises(ValidationError):
        first.title = "changed"  # type: ignore[misc]
    copy = first.model_copy(update={"schema_version": 1})
    assert "schema_version" in copy.model_fields_set
    assert first.model_fields_set == second.model_fields_set == fields_set
    assert "schema_version" not in fields_set


def test_the_fast_wire_schema_reads_every_field_the_precise_one_reads() -> None:
    """A field added to _Event (or _Meta, _Pair) must be added to the fast path's schema too."""
    fields = normalize_module._FAST_WIRE_SCHEMA["fields"]

    def wire_keys(name: str, field: Any) -> set[str]:
        alias = field.get("validation_alias", name)
        if isinstance(alias, str):
            return set() if alias.startswith("\0") else {alias}
        paths = alias if isinstance(alias[0], list) else [alias]
        return {path[0] for path in paths}

    read = set().union(*(wire_keys(name, field) for name, field in fields.items()))
    event = normalize_module._Event.model_fields
    assert read == {field.alias or name for name, field in event.items()} | {"schema_"}
    assert set(normalize_module._meta["fields"]) == set(normalize_module._Meta.model_fields)
    assert set(normalize_module._pair["fields"]) == set(normalize_module._Pair.model_fields)
    # Its output is the event's __dict__: RecentChange's fields in their order.
    assert list(fields) == list(RecentChange.model_fields)


#: RecentChange's fields that are no wire fields.
OWN_KEYS = [
    name for name in RecentChange.model_fields if name not in normalize_module._Event.model_fields
]


@pytest.mark.parametrize("key", OWN_KEYS)
@pytest.mark.parametrize("value", [None, "x", 1, {"old": 1}])
def test_wire_keys_named_like_the_fast_paths_own_are_ignored(key: str, value: Any) -> None:
    """RecentChange's own field names mean nothing on the wire."""
    plain = normalize_fast(CURRENT_EDIT, received_at=RECEIVED)
    assert agree(json.dumps({**orjson.loads(CURRENT_EDIT), key: value}).encode()) == plain
    # A value under the key a derived slot reads ("\0user_kind") makes the fast path decline.
    slot_key = json.dumps({**orjson.loads(CURRENT_EDIT), "\0" + key: value}).encode()
    assert agree(slot_key) in (None, plain)
