"""normalize() at the edges: each wire field absent, null, empty, of every JSON type, out of range,
and the time, schema, user and length cases one by one.

Expectations come from :func:`expected_outcome`: the rules written out again in plain Python
over ``json.loads``, independent of pydantic. It gives the reason (code and field) an event is
rejected for, checking in normalize()'s order (wire types in field order, then the envelope, the
times and the required fields), and every field of each typed event. (Golden values:
tests/app/test_normalize.py; every real recording: tests/recorded/test_normalize_recorded.py.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.contract import Canary, ChangeType, RecentChange, UserKind
from app.normalize import EARLIEST_EVENT_TIME, FUTURE_TOLERANCE, Rejected, normalize, user_kind
from app.normalize import event as normalize_module
from infra.replay.synthetic import Role
from tests import events
from tests import normalize_rules as rules
from tests.app import examples
from tests.app.bad_input import corpus, odd_but_valid
from tests.app.examples import EXAMPLES, encoded

RECEIVED = datetime(2026, 6, 21, tzinfo=UTC)
#: The synthetic stream starts the day before RECEIVED, so its events are in range.
START = datetime(2026, 6, 20, 12, tzinfo=UTC)


def expected_outcome(data: bytes) -> tuple[Any, ...]:
    return rules.expected_outcome(data, received_at=RECEIVED)


def outcome(data: bytes, **options: Any) -> tuple[Any, ...]:
    try:
        result = normalize(data, received_at=RECEIVED, **options)
    except Rejected as rejection:
        assert rejection.detail
        return ("rejected", rejection.code, rejection.field)
    if isinstance(result, Canary):
        return ("canary", result.emitted_at)
    assert type(result) is RecentChange
    # Both times in UTC, as the same zone object; every field set, as if passed to the model.
    assert result.event_time.tzinfo is result.emitted_at.tzinfo is UTC
    assert result.model_fields_set == set(RecentChange.model_fields) - {"schema_version"}
    assert RecentChange.model_validate(result.model_dump()) == result  # valid by the contract
    assert list(result.model_dump()) == list(RecentChange.model_fields)  # repr's order too
    return ("typed", result.model_dump())


def _with_types(result: tuple[Any, ...]) -> tuple[Any, ...]:
    """Typed values with their types: True == 1, yet a count must not be a bool."""
    if result[0] != "typed":
        return result
    return ("typed", {name: (type(value), value) for name, value in result[1].items()})


def as_expected(data: bytes) -> tuple[Any, ...]:
    """normalize()'s outcome for ``data``, checked against the rules."""
    result = outcome(data)
    assert _with_types(result) == _with_types(expected_outcome(data))
    return result


def typed(data: bytes) -> RecentChange:
    as_expected(data)
    result = normalize(data, received_at=RECEIVED)
    assert isinstance(result, RecentChange)
    return result


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
def test_every_synthetic_event_becomes_the_event_its_json_describes(legacy_share: float) -> None:
    for number, data in enumerate(events.synthetic(2000, start=START, legacy_share=legacy_share)):
        assert as_expected(data)[0] == "typed", f"position {number}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_becomes_the_event_its_json_describes(name: str) -> None:
    typed(encoded(EXAMPLES[name]()))


def test_synthetic_canaries_are_canaries() -> None:
    stream = events.stream(start=START, canary_interval=timedelta(seconds=5))
    canaries = [data for label, data in stream.labelled(1000) if label.role is Role.CANARY]
    assert canaries
    for data in canaries:
        assert as_expected(data)[0] == "canary"


@pytest.mark.parametrize("item", corpus(), ids=lambda item: item.name)
def test_bad_input_is_rejected_by_the_rules(item) -> None:
    if item.code != "too_large":  # a limit of normalize(), no rule of the event's
        assert as_expected(item.data) == ("rejected", item.code, item.field)


@pytest.mark.parametrize("name", sorted(odd_but_valid()))
def test_odd_but_valid_names_are_typed(name: str) -> None:
    typed(odd_but_valid()[name])


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
def test_every_field_set_to_odd_values(base: str) -> None:
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
            as_expected(edited(BASES[base], **{field: value}))


BROKEN: list[tuple[str, Any]] = [
    ("$schema", "/mediawiki/revision/create/1.1.0"),
    ("meta.stream", ...),
    ("meta.id", ...),
    ("meta.dt", "yesterday"),
    ("type", "delete"),
    ("bot", ...),
    ("timestamp", 631152000),
    ("wiki", ...),
    ("server_name", ""),
    ("namespace", ...),
    ("title", ""),
    ("namespace", "6"),
    ("user", 42),
    ("length", "big"),
]


@pytest.mark.parametrize("first", BROKEN, ids=lambda change: f"{change[0]}={change[1]!r}")
def test_with_two_flaws_the_first_check_names_the_reason(first: tuple[str, Any]) -> None:
    for second in BROKEN:
        if second[0] != first[0]:
            as_expected(edited(CURRENT_EDIT, **dict([first, second])))


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
    event = typed(edited(CURRENT_EDIT, meta__dt=meta_dt, timestamp=timestamp))
    assert event.emitted_at.utcoffset() == timedelta(0)
    if timestamp in (..., None):
        assert event.event_time == event.emitted_at


@pytest.mark.parametrize(
    "meta_dt", ["2026-06-20T11:22:33", "2026-06-20T11:22:33.417", "2026-06-20", "yesterday", ""]
)
@pytest.mark.parametrize("timestamp", [..., TIMESTAMP])
def test_meta_dt_without_time_zone_or_not_a_time_is_rejected(meta_dt: str, timestamp: Any) -> None:
    result = as_expected(edited(CURRENT_EDIT, meta__dt=meta_dt, timestamp=timestamp))
    assert result[:3] in (
        ("rejected", "invalid_field", "meta.dt"),
        ("rejected", "missing_field", "meta.dt"),
    )


def test_timestamp_absent_uses_meta_dt() -> None:
    event = typed(edited(CURRENT_EDIT, timestamp=...))
    assert event.event_time == event.emitted_at == examples.CURRENT_EDIT_EMITTED


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
    result = as_expected(edited(CURRENT_EDIT, timestamp=timestamp))
    if accepted:
        assert result[0] == "typed"
    else:
        assert result == ("rejected", "out_of_range", "timestamp")


def test_repeated_timestamps_share_a_cached_time_and_the_cache_stays_bounded() -> None:
    start = int(EARLIEST_EVENT_TIME.timestamp())
    count = normalize_module._CACHE_SIZE + 10
    template = orjson.loads(CURRENT_EDIT)
    for offset in range(count):
        template["timestamp"] = start + offset
        event = normalize(orjson.dumps(template), received_at=RECEIVED)
        assert isinstance(event, RecentChange)
        assert event.event_time == datetime.fromtimestamp(start + offset, UTC)
        assert len(normalize_module._EVENT_TIMES) <= normalize_module._CACHE_SIZE
    again = typed(edited(CURRENT_EDIT, timestamp=start + count - 1))
    assert again.event_time == datetime.fromtimestamp(start + count - 1, UTC)


def test_user_kinds_are_cached_per_name_and_the_cache_stays_bounded() -> None:
    count = normalize_module._CACHE_SIZE + 10
    # Addresses (the expensive parse) and names alternate; the bot flag is never cached.
    names = [f"10.0.{i // 256}.{i % 256}" if i % 2 else f"Editor {i}" for i in range(count)]
    for name in names:
        expected = UserKind.ANONYMOUS if name[0].isdigit() else UserKind.REGISTERED
        assert user_kind(name, bot=False) == expected
        assert user_kind(name, bot=False) == expected  # from the cache
        assert user_kind(name, bot=True) == UserKind.BOT
        assert len(normalize_module._USER_KINDS) <= normalize_module._CACHE_SIZE


@pytest.mark.parametrize("length", [{"new": 100}, {"old": 100}, {}, None, ...])
def test_length_new_absent_or_length_missing(length: Any) -> None:
    event = typed(edited(CURRENT_EDIT, length=length))
    new = length.get("new") if isinstance(length, dict) else None
    old = length.get("old") if isinstance(length, dict) else None
    assert (event.length_old, event.length_new) == (old, new)
    assert event.length_delta == (None if new is None else new)


@pytest.mark.parametrize("revision", [{"new": 100}, {}, None, ...])
def test_revision_missing(revision: Any) -> None:
    event = typed(edited(CURRENT_EDIT, revision=revision))
    assert event.revision_new == (revision.get("new") if isinstance(revision, dict) else None)


@pytest.mark.parametrize("user", [None, ...])
@pytest.mark.parametrize("bot", [True, False])
def test_user_null_or_absent_is_hidden(user: Any, bot: bool) -> None:
    event = typed(edited(CURRENT_EDIT, user=user, bot=bot))
    assert event.user is None and event.user_kind == UserKind.HIDDEN


@pytest.mark.parametrize(
    ("user", "bot", "kind"),
    [
        (examples.IPV4_USER, True, UserKind.BOT),
        (examples.IPV6_USER, True, UserKind.BOT),
        (examples.IPV4_USER, False, UserKind.ANONYMOUS),
        (examples.IPV6_USER, False, UserKind.ANONYMOUS),
        ("::1", False, UserKind.ANONYMOUS),
        ("fe80::1%eth0", False, UserKind.ANONYMOUS),  # a scoped IPv6 address
        (examples.TEMPORARY_USER, True, UserKind.BOT),
        (examples.TEMPORARY_USER, False, UserKind.TEMPORARY),
        ("~tilde user", False, UserKind.REGISTERED),
        ("2001 Odyssey", False, UserKind.REGISTERED),
        ("1.2.3", False, UserKind.REGISTERED),
        ("a:b", False, UserKind.REGISTERED),
        ("\u0663.\u0663.\u0663.\u0663", False, UserKind.REGISTERED),  # Arabic-Indic digits
        ("", False, UserKind.REGISTERED),
    ],
)
def test_user_kinds(user: str, bot: bool, kind: UserKind) -> None:
    assert typed(edited(CURRENT_EDIT, user=user, bot=bot)).user_kind == kind


@pytest.mark.parametrize(("namespace", "accepted"), [(-1, True), (-2, True), (-3, False)])
def test_negative_namespaces(namespace: int, accepted: bool) -> None:
    result = as_expected(edited(CURRENT_EDIT, namespace=namespace))
    if accepted:
        assert result[0] == "typed" and result[1]["namespace"] == namespace
    else:
        assert result == ("rejected", "invalid_field", "namespace")


@pytest.mark.parametrize("schema_uri", ["mediawiki/recentchange/1", "mediawiki/recentchange/2"])
def test_legacy_envelopes(schema_uri: str) -> None:
    assert typed(edited(LEGACY_EDIT, meta__schema_uri=schema_uri)).source_schema == schema_uri


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"meta.schema_uri": "mediawiki/recentchange/3"},
            ("unsupported_schema", "meta.schema_uri"),
        ),
        ({"meta.schema_uri": ...}, ("unsupported_schema", "$schema")),  # neither
        ({"meta.schema_uri": None}, ("unsupported_schema", "$schema")),
        ({"$schema": "mediawiki/recentchange/1"}, ("unsupported_schema", "$schema")),
        ({"$schema": "/mediawiki/recentchange/1.0.0"}, ("missing_field", "meta.stream")),
    ],
)
def test_unusual_legacy_envelopes_are_rejected(
    changes: dict[str, Any], reason: tuple[str, str]
) -> None:
    assert as_expected(edited(LEGACY_EDIT, **changes)) == ("rejected", *reason)


@pytest.mark.parametrize(
    ("schema", "accepted"),
    [
        ("/mediawiki/recentchange/1.0.1", True),
        ("/mediawiki/recentchange/1.12.3", True),
        ("/mediawiki/recentchange/1.0.0\n", True),  # the pattern's $ allows a final newline
        ("/mediawiki/recentchange/2.0.0", False),
        ("/mediawiki/recentchange/1.0", False),
    ],
)
def test_current_schema_versions(schema: str, accepted: bool) -> None:
    result = as_expected(edited(CURRENT_EDIT, **{"$schema": schema}))
    if accepted:
        assert result[0] == "typed" and result[1]["source_schema"] == schema
    else:
        assert result == ("rejected", "unsupported_schema", "$schema")


def test_schema_by_field_name_and_duplicate_keys() -> None:
    no_schema = orjson.loads(CURRENT_EDIT)
    schema = no_schema.pop("$schema")
    by_name = orjson.dumps({"schema_": schema, **no_schema})
    assert typed(by_name).source_schema == schema
    both = orjson.dumps({"schema_": "junk", **orjson.loads(CURRENT_EDIT)})
    assert typed(both).source_schema == schema
    null_schema = orjson.dumps({"$schema": None, "schema_": schema, **no_schema})
    # "$schema": null wins, and there is no meta.schema_uri
    assert as_expected(null_schema) == ("rejected", "unsupported_schema", "$schema")
    duplicated = CURRENT_EDIT.replace(b'"type":"edit"', b'"type":"new","type":"edit"')
    assert duplicated != CURRENT_EDIT
    assert typed(duplicated).type == ChangeType.EDIT  # the last key wins
    duplicated_meta = CURRENT_EDIT.replace(b'"meta":{', b'"meta":{"id":"first",')
    assert typed(duplicated_meta).event_id == examples.CURRENT_EDIT_ID


def test_canary() -> None:
    data = edited(CURRENT_EDIT, meta__domain="canary")
    assert as_expected(data) == ("canary", examples.CURRENT_EDIT_EMITTED)
    assert as_expected(edited(data, meta__dt="yesterday")) == ("canary", None)


def test_empty_server_name_falls_back_to_meta_domain() -> None:
    assert typed(edited(CURRENT_EDIT, server_name="")).server_name == "commons.wikimedia.org"
    no_domain = edited(CURRENT_EDIT, server_name="", meta__domain=...)
    assert as_expected(no_domain) == ("rejected", "missing_field", "server_name")


def test_too_large() -> None:
    assert outcome(CURRENT_EDIT, max_bytes=100) == ("rejected", "too_large", None)
    assert outcome(CURRENT_EDIT, max_bytes=len(CURRENT_EDIT))[0] == "typed"


def test_received_at_defaults_to_now() -> None:
    data = edited(CURRENT_EDIT, timestamp=int(datetime.now(UTC).timestamp()))
    assert isinstance(normalize(data), RecentChange)
    tomorrow = int((datetime.now(UTC) + timedelta(days=2)).timestamp())
    with pytest.raises(Rejected) as caught:
        normalize(edited(CURRENT_EDIT, timestamp=tomorrow))
    assert caught.value.code == "out_of_range"


def test_events_are_frozen_and_own_their_fields_set() -> None:
    first = normalize(CURRENT_EDIT, received_at=RECEIVED)
    second = normalize(LEGACY_EDIT, received_at=RECEIVED)
    assert isinstance(first, RecentChange) and isinstance(second, RecentChange)
    with pytest.raises(ValidationError):
        first.title = "changed"  # type: ignore[misc]
    copy = first.model_copy(update={"schema_version": 1})
    assert "schema_version" in copy.model_fields_set
    assert "schema_version" not in first.model_fields_set | second.model_fields_set
    assert first.model_fields_set is not second.model_fields_set


#: RecentChange's fields that are no wire fields.
OWN_KEYS = [name for name in RecentChange.model_fields if name not in rules.WIRE_FIELDS]


@pytest.mark.parametrize("key", OWN_KEYS)
@pytest.mark.parametrize("value", [None, "x", 1, {"old": 1}])
def test_wire_keys_named_like_typed_fields_are_ignored(key: str, value: Any) -> None:
    """RecentChange's own field names mean nothing on the wire."""
    plain = normalize(CURRENT_EDIT, received_at=RECEIVED)
    assert typed(json.dumps({**orjson.loads(CURRENT_EDIT), key: value}).encode()) == plain
