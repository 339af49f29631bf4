"""normalize(): every real recorded event, golden values, and the bad-input corpus."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from app.contract import Canary, ChangeType, RecentChange, UserKind
from app.normalize import Filters, Rejected, normalize, user_kind
from tests.app.bad_input import corpus, odd_but_valid
from tests.realdata import (
    ALL_FILES,
    CURRENT,
    LEGACY_BATCH,
    LEGACY_FIXTURES,
    LEGACY_SINGLE,
    line,
    lines,
)

RECEIVED = datetime(2026, 6, 21, tzinfo=UTC)


def typed(data: bytes) -> RecentChange:
    result = normalize(data, received_at=RECEIVED)
    assert isinstance(result, RecentChange)
    return result


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_recorded_event_becomes_a_typed_event(name: str) -> None:
    """No real event is rejected; each result satisfies the contract when re-validated."""
    for number, data in enumerate(lines(name), start=1):
        try:
            event = typed(data)
        except Rejected as rejection:  # pragma: no cover - the message is the point
            pytest.fail(f"{name}:{number} rejected: {rejection}")
        assert RecentChange.model_validate(event.model_dump()) == event
        source = orjson.loads(data)
        assert event.event_id == source["meta"]["id"]
        assert event.wiki == source["wiki"]
        assert event.type == source["type"]
        assert event.user == source.get("user")


def test_source_schemas_are_recorded() -> None:
    assert {typed(d).source_schema for d in lines(CURRENT)} == {"/mediawiki/recentchange/1.0.0"}
    assert {typed(d).source_schema for d in lines(LEGACY_BATCH)} == {"mediawiki/recentchange/1"}
    assert typed(line(LEGACY_SINGLE, 1)).source_schema == "mediawiki/recentchange/2"
    as_101 = orjson.loads(line(CURRENT, 1))
    as_101["$schema"] = "/mediawiki/recentchange/1.0.1"
    assert typed(orjson.dumps(as_101)).source_schema == "/mediawiki/recentchange/1.0.1"


def test_golden_current_edit() -> None:
    # Line 1: a commons bot edit, read by hand from the file.
    event = typed(line(CURRENT, 1))
    assert event.event_id == "84c92895-8294-4a3f-ac57-dc56e272c769"
    assert event.event_time == datetime(2026, 6, 20, 15, 49, 47, tzinfo=UTC)  # timestamp 1781970587
    assert event.emitted_at == datetime(2026, 6, 20, 15, 49, 48, 988000, tzinfo=UTC)
    assert (event.wiki, event.server_name) == ("commonswiki", "commons.wikimedia.org")
    assert (event.type, event.namespace, event.rc_id) == (ChangeType.EDIT, 6, 3365826630)
    assert (event.user, event.user_kind, event.bot) == ("DPLA bot", UserKind.BOT, True)
    assert (event.minor, event.patrolled) == (False, True)
    assert (event.length_old, event.length_new, event.length_delta) == (58723, 57709, -1014)
    assert (event.revision_old, event.revision_new) == (1234834012, 1234834942)
    assert event.log_type is None and event.log_action is None


def test_golden_legacy_edit() -> None:
    event = typed(line(LEGACY_BATCH, 1))
    assert event.event_time == datetime(2018, 3, 7, 16, 16, 17, tzinfo=UTC)
    assert event.emitted_at == event.event_time  # meta.dt "2018-03-07T16:16:17+00:00"
    assert (event.user, event.user_kind) == ("MisterSynergy", UserKind.REGISTERED)
    assert (event.length_old, event.length_new, event.length_delta) == (1007, 1438, 431)


def test_user_kinds() -> None:
    kinds = {typed(d).user: typed(d).user_kind for d in lines(LEGACY_BATCH)}
    assert kinds["92.249.204.224"] == UserKind.ANONYMOUS
    assert kinds["2A02:120B:C3E3:BA50:71B5:4541:38D:F08"] == UserKind.ANONYMOUS
    temporary = [e for e in map(typed, lines(CURRENT)) if (e.user or "").startswith("~2026-")]
    assert len(temporary) == 9
    assert {e.user_kind for e in temporary} == {UserKind.TEMPORARY}
    assert user_kind("~2026-35935-22", bot=False) == UserKind.TEMPORARY
    assert user_kind("~tilde user", bot=False) == UserKind.REGISTERED
    assert user_kind("1.2.3.4", bot=True) == UserKind.BOT
    assert user_kind("2001 Odyssey", bot=False) == UserKind.REGISTERED
    assert user_kind(None, bot=False) == UserKind.HIDDEN


def test_new_pages_count_their_length_from_zero() -> None:
    current_new = [e for e in map(typed, lines(CURRENT)) if e.type == ChangeType.NEW]
    legacy_new = [e for e in map(typed, lines(LEGACY_BATCH)) if e.type == ChangeType.NEW]
    assert len(current_new) == 6 and len(legacy_new) == 42
    for event in current_new + legacy_new:  # current omits length.old; legacy sends null
        assert event.length_old is None and event.revision_old is None
        assert event.length_delta == event.length_new


def test_log_events() -> None:
    logs = [e for e in map(typed, lines(CURRENT)) if e.type == ChangeType.LOG]
    assert len(logs) == 34
    assert all(e.log_type and e.log_action for e in logs)
    assert sum(e.rc_id is None for e in logs) == 3  # the README: 3 enwiki log events lack `id`
    legacy_logs = [e for e in map(typed, lines(LEGACY_BATCH)) if e.type == ChangeType.LOG]
    assert sum(e.rc_id is None for e in legacy_logs) == 22  # legacy sends "id": null


def test_auth_server_name_differs_from_wiki() -> None:
    created = [e for e in map(typed, lines(CURRENT)) if e.log_type == "newusers"]
    assert [(e.wiki, e.server_name) for e in created] == [("enwiki", "auth.wikimedia.org")]


@pytest.mark.parametrize(
    "meta_dt",
    [
        "2026-06-20T15:49:48Z",
        "2026-06-20T15:49:48.000Z",
        "2026-06-20T15:49:48+00:00",
        "2026-06-20T17:49:48+02:00",
    ],
)
def test_event_time_from_meta_dt_in_every_form(meta_dt: str) -> None:
    source = orjson.loads(line(CURRENT, 1))
    del source["timestamp"]
    source["meta"]["dt"] = meta_dt
    event = typed(orjson.dumps(source))
    assert event.event_time == event.emitted_at == datetime(2026, 6, 20, 15, 49, 48, tzinfo=UTC)


def test_missing_user_is_hidden() -> None:
    source = orjson.loads(line(CURRENT, 1))
    del source["user"]
    event = typed(orjson.dumps(source))
    assert event.user is None and event.user_kind == UserKind.HIDDEN


def test_fixture_with_timestamp_after_meta_dt_is_kept() -> None:
    # One upstream fixture's timestamp is 10,000 s after its meta.dt: within the tolerance.
    events = [typed(d) for d in lines(LEGACY_FIXTURES)]
    assert any((e.event_time - e.emitted_at).total_seconds() == 10000 for e in events)


def test_canary() -> None:
    source = orjson.loads(line(CURRENT, 1))
    source["meta"]["domain"] = "canary"
    result = normalize(orjson.dumps(source), received_at=RECEIVED)
    assert isinstance(result, Canary)
    assert result.emitted_at == datetime(2026, 6, 20, 15, 49, 48, 988000, tzinfo=UTC)


BAD = corpus()


def test_the_corpus_has_at_least_25_kinds() -> None:
    assert len(BAD) >= 25
    assert len({item.name for item in BAD}) == len(BAD)


@pytest.mark.parametrize("item", BAD, ids=[item.name for item in BAD])
def test_bad_input_is_rejected_with_a_precise_reason(item) -> None:
    with pytest.raises(Rejected) as caught:
        normalize(item.data, received_at=RECEIVED)
    assert caught.value.code == item.code, str(caught.value)
    assert caught.value.field == item.field, str(caught.value)
    assert caught.value.detail


@pytest.mark.parametrize("name", sorted(odd_but_valid()))
def test_odd_names_are_kept_verbatim(name: str) -> None:
    data = odd_but_valid()[name]
    assert typed(data).user == orjson.loads(data)["user"]


def test_filters() -> None:
    event = typed(line(CURRENT, 1))  # commonswiki, namespace 6, edit
    assert Filters().accept(event)
    assert Filters(namespaces={6}).accept(event)
    assert not Filters(namespaces={0}).accept(event)
    assert not Filters(wikis={"enwiki"}).accept(event)
    assert Filters(wikis={"commonswiki"}, types={"edit"}).accept(event)
    assert not Filters(types={"new", "log"}).accept(event)
