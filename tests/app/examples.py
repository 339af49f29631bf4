"""Hand-written recentchange events, one of each shape the normalizer must read.

Written by us in the schema's shape (mediawiki/recentchange 1.0.0 and the legacy
``mediawiki/recentchange/1`` and ``/2`` envelopes); names, titles and ids are made up. Each
function returns a fresh dict, so a test may change it; :func:`encoded` gives its bytes (compact,
as orjson writes them: ``"namespace":6``). The values the tests expect are written next to the
events, by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

Event = dict[str, Any]

CURRENT_SCHEMA = "/mediawiki/recentchange/1.0.0"
STREAM = "mediawiki.recentchange"

#: Made-up editors of every kind (IP addresses from the documentation ranges).
BOT_USER = "Harbour Lantern Bot"
REGISTERED_USER = "Quillon Marsh"
TEMPORARY_USER = "~2026-41873-05"
IPV4_USER = "198.51.100.23"
IPV6_USER = "2001:DB8:85A3::8A2E:370:7334"

#: The current edit's times: the change at 11:22:31, emitted 2.417 s later.
CURRENT_EDIT_TIMESTAMP = 1781954551
CURRENT_EDIT_TIME = datetime(2026, 6, 20, 11, 22, 31, tzinfo=UTC)
CURRENT_EDIT_EMITTED = datetime(2026, 6, 20, 11, 22, 33, 417000, tzinfo=UTC)
CURRENT_EDIT_ID = "5b0c7e2a-1f3d-4c8e-9a61-0d2f4e6b8a10"
#: The legacy edit's times: timestamp and meta.dt are the same second, as in 2018.
LEGACY_EDIT_TIME = datetime(2018, 11, 2, 8, 15, 40, tzinfo=UTC)


def encoded(event: Event) -> bytes:
    return orjson.dumps(event)


def _current_meta(event_id: str, dt: str, domain: str, page: str) -> Event:
    return {
        "uri": f"https://{domain}/wiki/{page}",
        "request_id": "f0e1d2c3-b4a5-4968-8776-655443322110",
        "id": event_id,
        "dt": dt,
        "domain": domain,
        "stream": STREAM,
        "topic": "eqiad.mediawiki.recentchange",
        "partition": 0,
        "offset": 6100000001,
    }


def current_edit() -> Event:
    """A bot's edit of a file page on commons, shrinking it by 1,014 bytes (patrolled)."""
    title = "File:Lighthouse at low tide.jpg"
    return {
        "$schema": CURRENT_SCHEMA,
        "meta": _current_meta(
            CURRENT_EDIT_ID,
            "2026-06-20T11:22:33.417Z",
            "commons.wikimedia.org",
            "File:Lighthouse_at_low_tide.jpg",
        ),
        "id": 3300000101,
        "type": "edit",
        "namespace": 6,
        "title": title,
        "title_url": "https://commons.wikimedia.org/wiki/File:Lighthouse_at_low_tide.jpg",
        "comment": "tidy the licence section",
        "timestamp": CURRENT_EDIT_TIMESTAMP,
        "user": BOT_USER,
        "bot": True,
        "notify_url": "https://commons.wikimedia.org/w/index.php?diff=1200000202",
        "minor": False,
        "patrolled": True,
        "length": {"old": 48210, "new": 47196},
        "revision": {"old": 1200000101, "new": 1200000202},
        "server_url": "https://commons.wikimedia.org",
        "server_name": "commons.wikimedia.org",
        "server_script_path": "/w",
        "wiki": "commonswiki",
        "parsedcomment": "tidy the licence section",
    }


def current_new_page() -> Event:
    """A page created on enwiki: the current schema omits ``length.old`` and ``revision.old``."""
    return {
        "$schema": CURRENT_SCHEMA,
        "meta": _current_meta(
            "7d41a9e0-3b6c-4f25-8e07-b2c9d1a4f5e3",
            "2026-06-20T11:22:36.050Z",
            "en.wikipedia.org",
            "Ferry_routes_of_the_northern_lakes",
        ),
        "id": 1900000303,
        "type": "new",
        "namespace": 0,
        "title": "Ferry routes of the northern lakes",
        "comment": "start a short article",
        "timestamp": 1781954555,
        "user": REGISTERED_USER,
        "bot": False,
        "minor": False,
        "length": {"new": 2318},
        "revision": {"new": 1300000404},
        "server_url": "https://en.wikipedia.org",
        "server_name": "en.wikipedia.org",
        "server_script_path": "/w",
        "wiki": "enwiki",
        "parsedcomment": "start a short article",
    }


def current_log_without_id() -> Event:
    """An abuse-filter hit on enwiki: a log event that carries no rc ``id`` at all."""
    return {
        "$schema": CURRENT_SCHEMA,
        "meta": _current_meta(
            "c2e8f4a6-9d1b-4e3f-a5c7-1b3d5f7a9c2e",
            "2026-06-20T11:22:39.902Z",
            "en.wikipedia.org",
            "Harbour_master",
        ),
        "type": "log",
        "namespace": 0,
        "title": "Harbour master",
        "comment": "",
        "timestamp": 1781954558,
        "user": TEMPORARY_USER,
        "bot": False,
        "log_id": 0,
        "log_type": "abusefilter",
        "log_action": "hit",
        "log_params": {"action": "edit", "filter": "17", "actions": "tag"},
        "log_action_comment": "triggered a filter",
        "server_url": "https://en.wikipedia.org",
        "server_name": "en.wikipedia.org",
        "server_script_path": "/w",
        "wiki": "enwiki",
        "parsedcomment": "",
    }


def current_categorize() -> Event:
    """A page added to a category on commons: no length, no revision."""
    return {
        "$schema": CURRENT_SCHEMA,
        "meta": _current_meta(
            "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d",
            "2026-06-20T11:22:37.221Z",
            "commons.wikimedia.org",
            "Category:Lighthouses_at_dusk",
        ),
        "id": 3300000404,
        "type": "categorize",
        "namespace": 14,
        "title": "Category:Lighthouses at dusk",
        "comment": "[[:File:Lighthouse at low tide.jpg]] added to category",
        "timestamp": 1781954556,
        "user": BOT_USER,
        "bot": True,
        "server_url": "https://commons.wikimedia.org",
        "server_name": "commons.wikimedia.org",
        "server_script_path": "/w",
        "wiki": "commonswiki",
        "parsedcomment": "added to category",
    }


def account_creation() -> Event:
    """A new account on enwiki, announced by the central login server: ``server_name`` and
    ``meta.domain`` are not the wiki's own domain."""
    return {
        "$schema": CURRENT_SCHEMA,
        "meta": _current_meta(
            "e4f5a6b7-c8d9-4e0f-a1b2-c3d4e5f6a7b8",
            "2026-06-20T11:22:41.006Z",
            "auth.wikimedia.org",
            "User:Quillon_Marsh",
        ),
        "id": 1900000505,
        "type": "log",
        "namespace": 2,
        "title": f"User:{REGISTERED_USER}",
        "comment": "",
        "timestamp": 1781954560,
        "user": REGISTERED_USER,
        "bot": False,
        "log_id": 170000001,
        "log_type": "newusers",
        "log_action": "create",
        "log_params": {"userid": 51000001},
        "log_action_comment": "created a new account",
        "server_url": "https://auth.wikimedia.org",
        "server_name": "auth.wikimedia.org",
        "server_script_path": "/enwiki/w",
        "wiki": "enwiki",
        "parsedcomment": "",
    }


def _legacy_meta(event_id: str, dt: str, page: str, schema_uri: str) -> Event:
    return {
        "topic": "eqiad.mediawiki.recentchange",
        "schema_uri": schema_uri,
        "uri": f"https://www.wikidata.org/wiki/{page}",
        "request_id": "8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0",
        "id": event_id,
        "dt": dt,
        "domain": "www.wikidata.org",
        "partition": 0,
        "offset": 720000001,
    }


def _legacy_edit(event_id: str, dt: str, timestamp: int, schema_uri: str) -> Event:
    return {
        "meta": _legacy_meta(event_id, dt, "Q4242424", schema_uri),
        "id": 690000101,
        "type": "edit",
        "namespace": 0,
        "title": "Q4242424",
        "comment": "/* wbsetdescription-add:1|en */ ferry across a northern lake",
        "timestamp": timestamp,
        "user": REGISTERED_USER,
        "bot": False,
        "minor": False,
        "patrolled": True,
        "length": {"old": 1530, "new": 1961},
        "revision": {"old": 680000101, "new": 680000202},
        "server_url": "https://www.wikidata.org",
        "server_name": "www.wikidata.org",
        "server_script_path": "/w",
        "wiki": "wikidatawiki",
        "parsedcomment": "ferry across a northern lake",
    }


def legacy_edit() -> Event:
    """A 2018 Wikidata edit in the schema-1 envelope: ``meta.schema_uri``, no ``$schema``, no
    ``meta.stream``, ``meta.dt`` ending in ``+00:00``; it grows the item by 431 bytes."""
    return _legacy_edit(
        "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
        "2018-11-02T08:15:40+00:00",
        1541146540,
        "mediawiki/recentchange/1",
    )


def legacy_schema_2_edit() -> Event:
    """The same kind of edit in the schema-2 envelope (2019)."""
    return _legacy_edit(
        "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
        "2019-04-11T17:02:14+00:00",
        1555002134,
        "mediawiki/recentchange/2",
    )


def legacy_new_page() -> Event:
    """A 2018 item creation: legacy events send ``"old": null`` where current ones omit it."""
    event = _legacy_edit(
        "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e",
        "2018-11-02T08:15:52+00:00",
        1541146552,
        "mediawiki/recentchange/1",
    )
    event.update(
        type="new",
        title="Q4242425",
        length={"old": None, "new": 812},
        revision={"old": None, "new": 680000303},
        patrolled=False,
    )
    event["meta"]["uri"] = "https://www.wikidata.org/wiki/Q4242425"
    return event


def legacy_log_with_null_id() -> Event:
    """A 2018 deletion: legacy log events send ``"id": null`` and nulls for the edit fields."""
    return {
        "meta": _legacy_meta(
            "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
            "2018-11-02T08:16:05+00:00",
            "Q4242426",
            "mediawiki/recentchange/1",
        ),
        "id": None,
        "type": "log",
        "namespace": 0,
        "title": "Q4242426",
        "comment": "duplicate of another item",
        "timestamp": 1541146565,
        "user": "Tamsin Reyes",
        "bot": False,
        "minor": None,
        "patrolled": None,
        "length": None,
        "revision": None,
        "log_id": 330000001,
        "log_type": "delete",
        "log_action": "delete",
        "log_params": [],
        "log_action_comment": "deleted a page",
        "server_url": "https://www.wikidata.org",
        "server_name": "www.wikidata.org",
        "server_script_path": "/w",
        "wiki": "wikidatawiki",
        "parsedcomment": "duplicate of another item",
    }


def legacy_timestamp_after_meta_dt() -> Event:
    """A hand-made fixture as some test suites write them: its ``timestamp`` lies 10,000 s after
    its ``meta.dt`` (within the normalizer's tolerance)."""
    event = legacy_edit()
    event["meta"].update(id="2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a", dt="2018-07-15T10:00:00+00:00")
    event["timestamp"] = 1531648800 + 10_000
    return event


def as_user(event: Event, user: str | None, *, bot: bool = False) -> Event:
    """``event`` by another editor; ``None`` removes the name, as a suppressed one is sent."""
    changed = {**event, "bot": bot}
    if user is None:
        changed.pop("user", None)
    else:
        changed["user"] = user
    return changed


def temporary_account_edit() -> Event:
    return as_user(current_edit(), TEMPORARY_USER)


def ipv4_edit() -> Event:
    return as_user(legacy_edit(), IPV4_USER)


def ipv6_edit() -> Event:
    return as_user(legacy_edit(), IPV6_USER)


def hidden_user_edit() -> Event:
    return as_user(current_edit(), None)


#: Every example by name, for tests that take each in turn.
EXAMPLES = {
    "current edit": current_edit,
    "current new page": current_new_page,
    "current log without id": current_log_without_id,
    "current categorize": current_categorize,
    "account creation": account_creation,
    "legacy edit": legacy_edit,
    "legacy schema 2 edit": legacy_schema_2_edit,
    "legacy new page": legacy_new_page,
    "legacy log with null id": legacy_log_with_null_id,
    "legacy timestamp after meta.dt": legacy_timestamp_after_meta_dt,
    "temporary account": temporary_account_edit,
    "IPv4 editor": ipv4_edit,
    "IPv6 editor": ipv6_edit,
    "hidden editor": hidden_user_edit,
}
