"""One ``recentchange`` payload in the schema's shape (1.0.0/1.0.1, or the legacy envelope),
with the editor's name and the page drawn from the world (world.py)."""

from __future__ import annotations

import ipaddress
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from infra.replay.world import (
    BOT_PARTS,
    LEGACY_TOPIC,
    NAME_PARTS,
    NAMESPACE_CHOICE,
    NAMESPACES,
    PATROLLING_WIKIS,
    STREAM,
    TITLE_WORDS,
    WIKI_INDEX,
    WIKIDATA_NAMESPACE_CHOICE,
    WIKIDATA_NAMESPACES,
    ZIPF,
    ChangeKind,
    EditorKind,
)


def uuid4(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def iso(moment: datetime, *, legacy: bool = False) -> str:
    moment = moment.astimezone(UTC)
    if legacy:
        return moment.replace(microsecond=0).isoformat()  # 2018-03-07T16:16:17+00:00
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_name(kind: EditorKind, wiki: str, rng: random.Random, seed: int) -> str | None:
    rank = ZIPF.pick(rng)
    # The same rank on the same wiki is the same person in every event of a seed.
    person = random.Random(f"{seed}:{wiki}:{kind.value}:{rank}")
    if kind is EditorKind.HIDDEN:
        return None
    if kind is EditorKind.BOT:
        return f"{person.choice(BOT_PARTS)}{person.choice(BOT_PARTS)}Bot{rank}"
    if kind is EditorKind.ANONYMOUS_V4:
        return str(ipaddress.IPv4Address(person.randrange(1 << 24, 223 << 24)))
    if kind is EditorKind.ANONYMOUS_V6:
        return str(ipaddress.IPv6Address((0x2001 << 112) | person.getrandbits(100)))
    if kind is EditorKind.TEMPORARY:
        return f"~2026-{person.randrange(10000, 99999)}-{person.randrange(10, 99)}"
    first, second = person.choice(NAME_PARTS), person.choice(NAME_PARTS)
    return f"{first} {second}" if person.random() < 0.6 else f"{first}{rank}"


def page(kind: ChangeKind, wiki: str, rng: random.Random) -> tuple[int, str]:
    rank = ZIPF.pick(rng)
    if kind is ChangeKind.CATEGORIZE:
        namespace = 14
    elif wiki == "wikidatawiki":
        namespace = WIKIDATA_NAMESPACE_CHOICE.pick(rng)
    else:
        namespace = NAMESPACE_CHOICE.pick(rng)
    if wiki == "wikidatawiki" and namespace == 0:
        return 0, f"Q{rank * 7919 % 120_000_000 + 1}"
    if wiki == "wikidatawiki" and namespace == 120:
        return 120, f"Property:P{rank % 12000 + 1}"
    prefix = (NAMESPACES.get(namespace) or WIKIDATA_NAMESPACES[namespace])[0]
    words = random.Random(f"{wiki}:{namespace}:{rank}")
    name = f"{words.choice(TITLE_WORDS)} {words.choice(TITLE_WORDS).lower()} {rank}"
    if namespace == 6:
        name += ".jpg"
    return namespace, prefix + name


def payload(
    *,
    kind: ChangeKind,
    wiki: str,
    namespace: int,
    title: str,
    user: str | None,
    bot: bool,
    moment: datetime,
    event_id: str,
    legacy: bool,
    schema: str,
    legacy_schema: str,
    log: tuple[str, str, int] | None,
    rng: random.Random,
    position: int,
) -> dict[str, Any]:
    server = WIKI_INDEX[wiki][0]
    # Percent-encoded as MediaWiki does (wfUrlencode): the schemas declare these URIs.
    page_url = f"https://{server}/wiki/{quote(title.replace(' ', '_'), safe=';@$!*(),/~:')}"
    rc_id = 1_000_000 + position * 3 + rng.randrange(3)
    if legacy:
        # Legacy events: timestamp equals meta.dt (to the second), nulls where 1.0.0 omits.
        change_time = moment.replace(microsecond=0)
        meta: dict[str, Any] = {
            "topic": LEGACY_TOPIC,
            "schema_uri": legacy_schema,
            "uri": page_url,
            "request_id": str(uuid4(rng)),
            "id": event_id,
            "dt": iso(moment, legacy=True),
            "domain": server,
        }
        event: dict[str, Any] = {"meta": meta}
    else:
        # meta.dt is when the event was emitted: 0.1 s to ~18 s after the change, so
        # consecutive events' timestamps are not in order.
        lag = min(17.8, 0.1 + rng.expovariate(1 / 1.5))
        change_time = moment - timedelta(seconds=lag)
        meta = {
            "uri": page_url,
            "request_id": str(uuid4(rng)),
            "id": event_id,
            "dt": iso(moment),
            "domain": server,
            "stream": STREAM,
            "topic": LEGACY_TOPIC,
            "partition": 0,
            "offset": 5_000_000_000 + position,
        }
        event = {"$schema": schema, "meta": meta}
    is_log = kind is ChangeKind.LOG
    if not is_log:
        event["id"] = rc_id
    elif legacy:
        event["id"] = None  # legacy log events send a null rc id
    elif rng.random() < 0.5:
        event["id"] = rc_id  # current log events: present on some, absent on others
    comment = _comment(kind, title, rng)
    event.update(
        type=kind.value,
        namespace=namespace,
        title=title,
        comment=comment,
        timestamp=int(change_time.timestamp()),
    )
    if user is not None:
        event["user"] = user
    event["bot"] = bot
    if kind is ChangeKind.EDIT or kind is ChangeKind.NEW:
        new_length = rng.randrange(0, 60_000)
        new_revision = 2_000_000_000 + position
        if kind is ChangeKind.EDIT:
            old_length = max(0, new_length - int(rng.gauss(0, 800)))
            event["minor"] = rng.random() < 0.3
            event["length"] = {"old": old_length, "new": new_length}
            event["revision"] = {"old": new_revision - 1 - rng.randrange(5000), "new": new_revision}
        else:
            event["minor"] = False
            event["length"] = {"old": None, "new": new_length} if legacy else {"new": new_length}
            event["revision"] = (
                {"old": None, "new": new_revision} if legacy else {"new": new_revision}
            )
        if wiki in PATROLLING_WIKIS:
            event["patrolled"] = bot or rng.random() < 0.5
    elif log is not None:
        log_type, log_action, _ = log
        event["log_id"] = 0 if log_type == "abusefilter" else 90_000_000 + position
        event["log_type"] = log_type
        event["log_action"] = log_action
        event["log_params"] = [] if log_type == "delete" else {"reason": "synthetic"}
        event["log_action_comment"] = f"{log_action} {title}"
    event.update(
        server_url=f"https://{server}",
        server_name=server,
        server_script_path="/w",
        wiki=wiki,
        parsedcomment=comment.replace("[[", "<a>").replace("]]", "</a>"),
    )
    if not legacy:
        event["title_url"] = page_url
        if not is_log:
            event["notify_url"] = f"https://{server}/w/index.php?diff={rc_id}"
    return event


def _comment(kind: ChangeKind, title: str, rng: random.Random) -> str:
    if kind is ChangeKind.CATEGORIZE:
        return f"[[:{title}]] added to category"
    draw = rng.random()
    if draw < 0.05:
        return ""
    if draw < 0.1:
        return "/* 概要 */ 修正 \u200e"  # Chinese, and a left-to-right mark as the live stream has
    return rng.choice(
        ("fix typo", "Added reference", "Reverted edits", "update infobox", "/* History */ expand")
    )
