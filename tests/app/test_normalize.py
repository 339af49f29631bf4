"""normalize(): hand-written events with golden values, the synthetic stream against its labels,
and the bad-input corpus. (Every real recording: tests/recorded/test_normalize_recorded.py.)"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache

import orjson
import pytest

from app.contract import Canary, ChangeType, RecentChange, UserKind
from app.normalize import Filters, Rejected, normalize, user_kind
from infra.replay.synthetic import Label
from infra.replay.world import ChangeKind
from tests import events
from tests.app import examples
from tests.app.bad_input import corpus, odd_but_valid
from tests.app.examples import EXAMPLES, encoded

RECEIVED = datetime(2026, 6, 21, tzinfo=UTC)
#: The synthetic stream starts the day before RECEIVED, so its events are in range.
START = datetime(2026, 6, 20, 12, tzinfo=UTC)


def typed(data: bytes) -> RecentChange:
    result = normalize(data, received_at=RECEIVED)
    assert isinstance(result, RecentChange)
    return result


@cache
def stream(count: int) -> list[tuple[Label, bytes]]:
    """Half current, half legacy envelopes: every shape the generator makes."""
    return events.labelled(count, start=START, legacy_share=0.5)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_becomes_a_typed_event(name: str) -> None:
    """Each result satisfies the contract when re-validated and carries the source's values."""
    source = EXAMPLES[name]()
    event = typed(encoded(source))
    assert RecentChange.model_validate(event.model_dump()) == event
    assert event.event_id == source["meta"]["id"]
    assert (event.wiki, event.type) == (source["wiki"], source["type"])
    assert event.user == source.get("user")


def test_every_synthetic_event_becomes_what_it_was_made_to_be() -> None:
    for label, data in stream(3000):
        try:
            event = typed(data)
        except Rejected as rejection:  # pragma: no cover - the message is the point
            pytest.fail(f"position {label.position} rejected: {rejection}")
        assert RecentChange.model_validate(event.model_dump()) == event
        assert event.event_id == label.event_id
        assert label.kind is not None and event.type == label.kind.value
        assert (event.wiki, event.namespace, event.title) == (
            label.wiki, label.namespace, label.title
        )  # fmt: skip
        assert event.user == label.user
        assert (
            label.editor is not None and event.user_kind == events.USER_KIND_OF_EDITOR[label.editor]
        )
        assert event.source_schema.startswith("mediawiki/") is label.legacy


def test_source_schemas_are_recorded() -> None:
    assert typed(encoded(examples.current_edit())).source_schema == "/mediawiki/recentchange/1.0.0"
    assert typed(encoded(examples.legacy_edit())).source_schema == "mediawiki/recentchange/1"
    legacy_2 = typed(encoded(examples.legacy_schema_2_edit()))
    assert legacy_2.source_schema == "mediawiki/recentchange/2"
    as_101 = {**examples.current_edit(), "$schema": "/mediawiki/recentchange/1.0.1"}
    assert typed(encoded(as_101)).source_schema == "/mediawiki/recentchange/1.0.1"
    # Over the stream: each event's own $schema, else its meta.schema_uri; all four occur.
    seen = set()
    for _, data in stream(1000):
        source = orjson.loads(data)
        expected = source.get("$schema") or source["meta"]["schema_uri"]
        assert typed(data).source_schema == expected
        seen.add(expected)
    assert seen == {
        "/mediawiki/recentchange/1.0.0",
        "/mediawiki/recentchange/1.0.1",
        "mediawiki/recentchange/1",
        "mediawiki/recentchange/2",
    }


def test_golden_current_edit() -> None:
    event = typed(encoded(examples.current_edit()))
    assert event.event_id == examples.CURRENT_EDIT_ID
    assert event.event_time == examples.CURRENT_EDIT_TIME  # timestamp 1781954551
    assert event.emitted_at == examples.CURRENT_EDIT_EMITTED  # meta.dt 11:22:33.417Z
    assert (event.wiki, event.server_name) == ("commonswiki", "commons.wikimedia.org")
    assert (event.type, event.namespace, event.rc_id) == (ChangeType.EDIT, 6, 3300000101)
    assert event.title == "File:Lighthouse at low tide.jpg"
    assert (event.user, event.user_kind, event.bot) == ("Harbour Lantern Bot", UserKind.BOT, True)
    assert (event.minor, event.patrolled) == (False, True)
    assert (event.length_old, event.length_new, event.length_delta) == (48210, 47196, -1014)
    assert (event.revision_old, event.revision_new) == (1200000101, 1200000202)
    assert event.log_type is None and event.log_action is None
    assert event.comment == "tidy the licence section"


def test_golden_legacy_edit() -> None:
    event = typed(encoded(examples.legacy_edit()))
    assert event.event_time == examples.LEGACY_EDIT_TIME
    assert event.emitted_at == event.event_time  # meta.dt "2018-11-02T08:15:40+00:00"
    assert (event.user, event.user_kind) == ("Quillon Marsh", UserKind.REGISTERED)
    assert (event.length_old, event.length_new, event.length_delta) == (1530, 1961, 431)
    assert (event.wiki, event.server_name) == ("wikidatawiki", "www.wikidata.org")


def test_user_kinds() -> None:
    assert typed(encoded(examples.ipv4_edit())).user_kind == UserKind.ANONYMOUS
    assert typed(encoded(examples.ipv6_edit())).user_kind == UserKind.ANONYMOUS
    temporary = typed(encoded(examples.temporary_account_edit()))
    assert (temporary.user, temporary.user_kind) == ("~2026-41873-05", UserKind.TEMPORARY)
    assert typed(encoded(examples.current_log_without_id())).user_kind == UserKind.TEMPORARY
    assert typed(encoded(examples.hidden_user_edit())).user_kind == UserKind.HIDDEN
    assert user_kind("~2026-41873-05", bot=False) == UserKind.TEMPORARY
    assert user_kind("~tilde user", bot=False) == UserKind.REGISTERED
    assert user_kind("1.2.3.4", bot=True) == UserKind.BOT
    assert user_kind("2001 Odyssey", bot=False) == UserKind.REGISTERED
    assert user_kind("2001:db8::1", bot=False) == UserKind.ANONYMOUS
    assert user_kind(None, bot=False) == UserKind.HIDDEN


def test_new_pages_count_their_length_from_zero() -> None:
    current, legacy = examples.current_new_page(), examples.legacy_new_page()
    assert "old" not in current["length"] and "old" not in current["revision"]
    assert legacy["length"]["old"] is None and legacy["revision"]["old"] is None
    made_new = [data for label, data in stream(3000) if label.kind is ChangeKind.NEW]
    new_pages = [typed(data) for data in (encoded(current), encoded(legacy), *made_new)]
    assert sum(e.type == ChangeType.NEW for e in new_pages) == len(made_new) + 2
    assert {e.source_schema.startswith("mediawiki/") for e in new_pages} == {True, False}
    for event in new_pages:  # current omits length.old; legacy sends null
        assert event.length_old is None and event.revision_old is None
        assert event.length_new is not None and event.length_delta == event.length_new
    assert typed(encoded(current)).length_delta == 2318
    assert typed(encoded(legacy)).length_delta == 812


def test_log_events() -> None:
    without_id = typed(encoded(examples.current_log_without_id()))
    null_id = typed(encoded(examples.legacy_log_with_null_id()))
    created = typed(encoded(examples.account_creation()))
    assert (without_id.type, without_id.rc_id) == (ChangeType.LOG, None)
    assert (without_id.log_type, without_id.log_action) == ("abusefilter", "hit")
    assert (null_id.type, null_id.rc_id) == (ChangeType.LOG, None)
    assert (null_id.log_type, null_id.log_action) == ("delete", "delete")
    assert null_id.length_delta is None and null_id.revision_new is None
    assert (created.rc_id, created.log_type) == (1900000505, "newusers")
    # Over the stream: every log event typed as a log, its rc id absent exactly where the
    # source has none (current events omit it on some, legacy events send null).
    logs = [data for label, data in stream(3000) if label.kind is ChangeKind.LOG]
    sources = [orjson.loads(data) for data in logs]
    typed_logs = [typed(data) for data in logs]
    assert typed_logs and all(e.type == ChangeType.LOG for e in typed_logs)
    assert all(e.log_type and e.log_action for e in typed_logs)
    assert [e.rc_id for e in typed_logs] == [source.get("id") for source in sources]
    assert any("id" not in s for s in sources) and any(
        "id" in s and s["id"] is None for s in sources
    )


def test_auth_server_name_differs_from_wiki() -> None:
    created = typed(encoded(examples.account_creation()))
    assert (created.wiki, created.server_name) == ("enwiki", "auth.wikimedia.org")


@pytest.mark.parametrize(
    "meta_dt",
    [
        "2026-06-20T11:22:33Z",
        "2026-06-20T11:22:33.000Z",
        "2026-06-20T11:22:33+00:00",
        "2026-06-20T13:22:33+02:00",
    ],
)
def test_event_time_from_meta_dt_in_every_form(meta_dt: str) -> None:
    source = examples.current_edit()
    del source["timestamp"]
    source["meta"]["dt"] = meta_dt
    event = typed(encoded(source))
    assert event.event_time == event.emitted_at == datetime(2026, 6, 20, 11, 22, 33, tzinfo=UTC)


def test_missing_user_is_hidden() -> None:
    source = examples.current_edit()
    del source["user"]
    event = typed(encoded(source))
    assert event.user is None and event.user_kind == UserKind.HIDDEN


def test_fixture_with_timestamp_after_meta_dt_is_kept() -> None:
    # A hand-made fixture's timestamp 10,000 s after its meta.dt: within the tolerance.
    event = typed(encoded(examples.legacy_timestamp_after_meta_dt()))
    assert (event.event_time - event.emitted_at).total_seconds() == 10000


def test_canary() -> None:
    source = examples.current_edit()
    source["meta"]["domain"] = "canary"
    result = normalize(encoded(source), received_at=RECEIVED)
    assert isinstance(result, Canary)
    assert result.emitted_at == examples.CURRENT_EDIT_EMITTED


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


def test_a_rejection_behaves_like_any_exception() -> None:
    """contextlib sets ``__traceback__``, ``add_note`` sets ``__notes__``, a process pool pickles
    it: none may fail (a frozen dataclass made all three raise)."""

    @contextlib.contextmanager
    def passing_through() -> Iterator[None]:
        yield

    with pytest.raises(Rejected) as caught, passing_through():
        normalize(b"{", received_at=RECEIVED)
    rejection = caught.value
    assert rejection.__traceback__ is not None
    rejection.add_note("raw offset 12")
    assert rejection.__notes__ == ["raw offset 12"]
    copy = pickle.loads(pickle.dumps(rejection))
    assert type(copy) is Rejected and str(copy) == str(rejection)
    assert copy.as_dict() == rejection.as_dict() == {
        "code": "invalid_json", "field": None, "detail": rejection.detail
    }  # fmt: skip
    located = Rejected("missing_field", "required", "meta.id")
    assert str(located) == "missing_field meta.id: required"
    assert (located.code, located.detail, located.field) == ("missing_field", "required", "meta.id")


@pytest.mark.parametrize("name", sorted(odd_but_valid()))
def test_odd_names_are_kept_verbatim(name: str) -> None:
    data = odd_but_valid()[name]
    assert typed(data).user == orjson.loads(data)["user"]


def test_filters() -> None:
    event = typed(encoded(examples.current_edit()))  # commonswiki, namespace 6, edit
    assert Filters().accept(event)
    assert Filters(namespaces={6}).accept(event)
    assert not Filters(namespaces={0}).accept(event)
    assert not Filters(wikis={"enwiki"}).accept(event)
    assert Filters(wikis={"commonswiki"}, types={"edit"}).accept(event)
    assert not Filters(types={"new", "log"}).accept(event)
