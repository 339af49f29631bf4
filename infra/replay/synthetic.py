"""A synthetic ``recentchange`` stream of our own: deterministic by seed, random access by position.

Written from the official schema's field list (mediawiki/recentchange 1.0.0/1.0.1, and the legacy
``mediawiki/recentchange/1`` and ``/2`` envelopes), at mixes close to the live stream's: types,
wikis (a Zipf-like share, commons and wikidata heavy), namespaces, bots, anonymous (IPv4/IPv6),
temporary, hidden and registered editors with names in many scripts. It also makes what a
pipeline must cope with: ``length.old`` absent on new pages, log events without ``revision`` /
``length`` and with ``id`` absent or null, ``timestamp`` out of order against ``meta.dt``,
repeats of an earlier ``meta.id``, canary events, and labelled bursts for the analytics.

Every event is a pure function of (options, position): the replay server can serve an endless
stream, resume at any ``Last-Event-ID`` and answer ``since`` without keeping anything, and the
same seed gives the same bytes on every machine. :meth:`SyntheticStream.label` says what each
position was made to be, so tests compare the pipeline against the generator's intent, not
against the pipeline's own code.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import orjson

# ---- the world the stream is about ----------------------------------------------------------

#: (wiki, server name, relative share): about the live stream's order of magnitude, skewed.
WIKIS: tuple[tuple[str, str, float], ...] = (
    ("commonswiki", "commons.wikimedia.org", 30.0),
    ("wikidatawiki", "www.wikidata.org", 26.0),
    ("enwiki", "en.wikipedia.org", 12.0),
    ("dewiki", "de.wikipedia.org", 3.5),
    ("frwiki", "fr.wikipedia.org", 3.0),
    ("eswiki", "es.wikipedia.org", 2.6),
    ("ruwiki", "ru.wikipedia.org", 2.2),
    ("jawiki", "ja.wikipedia.org", 1.8),
    ("itwiki", "it.wikipedia.org", 1.6),
    ("zhwiki", "zh.wikipedia.org", 1.4),
    ("enwiktionary", "en.wiktionary.org", 1.3),
    ("arwiki", "ar.wikipedia.org", 1.2),
    ("ptwiki", "pt.wikipedia.org", 1.1),
    ("plwiki", "pl.wikipedia.org", 1.0),
    ("ukwiki", "uk.wikipedia.org", 0.9),
    ("hewiki", "he.wikipedia.org", 0.8),
    ("fawiki", "fa.wikipedia.org", 0.8),
    ("nlwiki", "nl.wikipedia.org", 0.7),
    ("urwiki", "ur.wikipedia.org", 0.6),
    ("metawiki", "meta.wikimedia.org", 0.6),
    ("svwiki", "sv.wikipedia.org", 0.5),
    ("cawiki", "ca.wikipedia.org", 0.5),
    ("kowiki", "ko.wikipedia.org", 0.45),
    ("viwiki", "vi.wikipedia.org", 0.4),
    ("idwiki", "id.wikipedia.org", 0.4),
    ("trwiki", "tr.wikipedia.org", 0.35),
    ("hiwiki", "hi.wikipedia.org", 0.3),
    ("frwiktionary", "fr.wiktionary.org", 0.3),
    ("enwikisource", "en.wikisource.org", 0.25),
    ("mediawikiwiki", "www.mediawiki.org", 0.2),
    ("specieswiki", "species.wikimedia.org", 0.15),
    ("dewikivoyage", "de.wikivoyage.org", 0.1),
)
#: Wikis with patrolling: their edits carry ``patrolled`` (others omit it).
PATROLLING_WIKIS = frozenset({"commonswiki", "wikidatawiki", "dewiki", "ruwiki", "metawiki"})

#: Namespace -> (title prefix, share of edits).
NAMESPACES: dict[int, tuple[str, float]] = {
    0: ("", 55.0),
    1: ("Talk:", 4.0),
    2: ("User:", 6.0),
    3: ("User talk:", 5.0),
    4: ("Wikipedia:", 2.0),
    6: ("File:", 12.0),
    10: ("Template:", 2.0),
    14: ("Category:", 3.0),
    118: ("Draft:", 0.5),
}
#: Wikidata items live in namespace 0 (Q…) and properties in 120 (Property:P…).
WIKIDATA_NAMESPACES = {
    0: ("", 97.0),
    120: ("Property:", 1.0),
    2: ("User:", 1.0),
    4: ("Wikidata:", 1.0),
}


class ChangeKind(StrEnum):
    """The ``type`` of a recentchange event."""

    EDIT = "edit"
    NEW = "new"
    LOG = "log"
    CATEGORIZE = "categorize"
    EXTERNAL = "external"


#: Types by share of the live stream (categorize is frequent, external rare).
TYPE_SHARES: tuple[tuple[ChangeKind, float], ...] = (
    (ChangeKind.EDIT, 53.0),
    (ChangeKind.CATEGORIZE, 35.0),
    (ChangeKind.LOG, 9.0),
    (ChangeKind.NEW, 2.8),
    (ChangeKind.EXTERNAL, 0.2),
)


class EditorKind(StrEnum):
    """Who made a change, as the generator chose it."""

    BOT = "bot"
    ANONYMOUS_V4 = "anonymous-ipv4"
    ANONYMOUS_V6 = "anonymous-ipv6"
    TEMPORARY = "temporary"
    HIDDEN = "hidden"
    REGISTERED = "registered"


EDITOR_SHARES: tuple[tuple[EditorKind, float], ...] = (
    (EditorKind.BOT, 40.0),
    (EditorKind.REGISTERED, 45.0),
    (EditorKind.TEMPORARY, 7.0),
    (EditorKind.ANONYMOUS_V4, 4.0),
    (EditorKind.ANONYMOUS_V6, 3.0),
    (EditorKind.HIDDEN, 1.0),
)

#: (log_type, log_action, target namespace)
LOG_ACTIONS: tuple[tuple[str, str, int], ...] = (
    ("newusers", "create", 2),
    ("upload", "upload", 6),
    ("patrol", "patrol", 0),
    ("delete", "delete", 0),
    ("move", "move", 0),
    ("protect", "protect", 0),
    ("abusefilter", "hit", 0),
    ("thanks", "thank", 2),
    ("block", "block", 2),
)

#: Pieces of registered user names: several scripts, RTL, emoji, spaces, quotes, SQL-ish text.
NAME_PARTS: tuple[str, ...] = (
    "Ada", "Lovelace", "Grace", "Brook", "Quill", "Marlow", "Juniper", "Okonkwo",
    "Żaneta", "Łukasz", "Søren", "Ngọc", "José", "Çelik",
    "Алёна", "Дмитрий", "Σοφία", "Νίκος",
    "فاطمة", "يوسف", "נועה", "אבישי", "زہرا",
    "हिमालय", "தமிழ்", "さくら", "太郎", "小明", "지민",
    "🦉", "🌍", "✨",
    "O'Brien", 'The "Editor"', "Robert'); DROP TABLE users;--", "1=1 OR",
)  # fmt: skip
BOT_PARTS: tuple[str, ...] = (
    "Archive", "Link", "Cat", "Cite", "Data", "Ref", "Typo", "Upload", "Merge", "Tidy",
)  # fmt: skip
TITLE_WORDS: tuple[str, ...] = (
    "River", "History", "Station", "Festival", "Bridge", "Election", "Museum", "Cathedral",
    "Lake", "Mountain", "Library", "Treaty", "Comet", "Orchestra", "Harbour", "Garden",
    "Ōsaka", "Köln", "Zürich", "Kraków", "São Paulo", "Москва", "Αθήνα", "القاهرة",
    "ירושלים", "東京", "北京", "서울", "मुंबई",
)  # fmt: skip

CURRENT_SCHEMAS = ("/mediawiki/recentchange/1.0.0", "/mediawiki/recentchange/1.0.1")
LEGACY_SCHEMAS = ("mediawiki/recentchange/1", "mediawiki/recentchange/2")
STREAM = "mediawiki.recentchange"
LEGACY_TOPIC = "eqiad.mediawiki.recentchange"
CANARY_DOMAIN = "canary"

#: The live stream's rate, about 40 events per second.
LIVE_RATE = 40.0


# ---- options and labels ---------------------------------------------------------------------


class BurstKind(StrEnum):
    WIKI = "wiki"  # one wiki at N times its usual rate
    PAGE = "page"  # one page edited by K editors


@dataclass(frozen=True)
class Burst:
    """Extra events on top of the base stream, from ``at`` (after the stream's start) on."""

    kind: BurstKind
    wiki: str
    at: timedelta
    duration: timedelta
    #: WIKI: the wiki's rate times this (>= 1). PAGE: ignored.
    multiplier: float = 1.0
    #: PAGE: the page, its distinct editors and its edits in the burst.
    title: str = ""
    editors: int = 0
    edits: int = 0

    def __post_init__(self) -> None:
        if self.wiki not in WIKI_INDEX:
            raise ValueError(f"burst: unknown wiki {self.wiki!r} (one of {', '.join(WIKI_INDEX)})")
        if self.duration <= timedelta(0) or self.at < timedelta(0):
            raise ValueError("burst: the duration must be positive and the start not negative")
        if self.kind is BurstKind.WIKI and self.multiplier <= 1:
            raise ValueError("burst: a wiki burst needs a multiplier above 1")
        if self.kind is BurstKind.PAGE and not (self.title and 1 <= self.editors <= self.edits):
            raise ValueError("burst: a page burst needs a title and 1 <= editors <= edits")

    def extra_rate(self, base_rate: float) -> float:
        """Events per second this burst adds while it lasts."""
        if self.kind is BurstKind.WIKI:
            return (self.multiplier - 1) * base_rate * WIKI_SHARE[self.wiki]
        return self.edits / self.duration.total_seconds()

    def label(self, start: datetime) -> dict[str, Any]:
        """The side file's record of this burst (times absolute, ISO-8601 UTC)."""
        record: dict[str, Any] = {
            "kind": self.kind.value,
            "wiki": self.wiki,
            "start": _iso(start + self.at),
            "end": _iso(start + self.at + self.duration),
        }
        if self.kind is BurstKind.WIKI:
            record["multiplier"] = self.multiplier
        else:
            record.update(title=self.title, editors=self.editors, edits=self.edits)
        return record


@dataclass(frozen=True)
class StreamOptions:
    """What the synthetic stream looks like. Defaults: close to the live stream."""

    seed: int = 7
    #: Events per second of event time (before bursts).
    rate: float = LIVE_RATE
    #: Event time of position 0; None: the moment the stream is made ("now").
    start: datetime | None = None
    #: Share of events in a legacy envelope (``meta.schema_uri``, before 2019); 0 by default.
    legacy_share: float = 0.0
    #: Share of current-envelope events with ``$schema`` 1.0.1 (the rest 1.0.0).
    schema_101_share: float = 0.1
    #: Share of positions that repeat an earlier event (same bytes, same ``meta.id``).
    duplicate_rate: float = 0.002
    #: How far back (in positions) a repeat reaches, at most.
    duplicate_reach: int = 200
    #: A canary event every this much event time (None: none).
    canary_interval: timedelta | None = timedelta(minutes=10)
    bursts: tuple[Burst, ...] = ()

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate must be a positive number of events per second")
        for name in ("legacy_share", "schema_101_share", "duplicate_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie between 0 and 1")
        if self.duplicate_rate >= 0.5:
            raise ValueError("duplicate_rate must be below 0.5")
        if self.duplicate_reach < 1:
            raise ValueError("duplicate_reach must be at least 1")
        if self.canary_interval is not None and self.canary_interval <= timedelta(0):
            raise ValueError("canary_interval must be positive")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError("start must carry a time zone")


class Role(StrEnum):
    """What a position was made to be."""

    CHANGE = "change"  # a change of the base stream
    BURST = "burst"  # a change added by a burst
    DUPLICATE = "duplicate"  # a repeat of an earlier position's event
    CANARY = "canary"  # Wikimedia's heartbeat, not a change


@dataclass(frozen=True)
class Label:
    """The generator's intent for one position, independent of any parser."""

    position: int
    role: Role
    #: The position whose event this one repeats (DUPLICATE), else this position.
    original: int
    event_id: str
    kind: ChangeKind | None = None
    editor: EditorKind | None = None
    wiki: str | None = None
    namespace: int | None = None
    title: str | None = None
    user: str | None = None
    legacy: bool = False
    burst: int | None = None  # index into StreamOptions.bursts


# ---- the stream -----------------------------------------------------------------------------

WIKI_INDEX = {wiki: (server, share) for wiki, server, share in WIKIS}
_TOTAL_SHARE = sum(share for _, _, share in WIKIS)
WIKI_SHARE = {wiki: share / _TOTAL_SHARE for wiki, _, share in WIKIS}


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


class _Choice:
    """Weighted choice with a precomputed cumulative table."""

    def __init__(self, items: Sequence[Any], weights: Sequence[float]) -> None:
        self.items = tuple(items)
        self.cumulative = _cumulative(weights)
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


_WIKI_CHOICE = _Choice([w for w, _, _ in WIKIS], [s for _, _, s in WIKIS])
_TYPE_CHOICE = _Choice([t for t, _ in TYPE_SHARES], [s for _, s in TYPE_SHARES])
_EDITOR_CHOICE = _Choice([e for e, _ in EDITOR_SHARES], [s for _, s in EDITOR_SHARES])
_NS_CHOICE = _Choice(list(NAMESPACES), [s for _, s in NAMESPACES.values()])
_WD_NS_CHOICE = _Choice(list(WIKIDATA_NAMESPACES), [s for _, s in WIKIDATA_NAMESPACES.values()])
#: Editors and pages per wiki follow a Zipf-like law: a few very busy, a long tail.
_POOL = 2000
_ZIPF = _Choice(range(_POOL), [1 / (rank + 1) for rank in range(_POOL)])


@dataclass(frozen=True)
class _Segment:
    """From event time ``offset`` (s after the start) and position ``first`` on, ``rate``/s."""

    offset: float
    first: float
    rate: float


class SyntheticStream:
    """The events of one synthetic stream, by position (0, 1, 2, … without end)."""

    def __init__(self, options: StreamOptions | None = None) -> None:
        self.options = options or StreamOptions()
        self.start = self.options.start or datetime.now(UTC)
        self._segments = self._timeline()
        self._canary_every = (
            None
            if self.options.canary_interval is None
            else self.options.canary_interval.total_seconds()
        )

    # -- time ------------------------------------------------------------------------------

    def _timeline(self) -> list[_Segment]:
        """Piecewise-constant total rate (base + active bursts) over event time."""
        base = self.options.rate
        edges = {0.0}
        for burst in self.options.bursts:
            edges.add(burst.at.total_seconds())
            edges.add((burst.at + burst.duration).total_seconds())
        segments: list[_Segment] = []
        first = 0.0
        ordered = sorted(edges)
        for index, offset in enumerate(ordered):
            bursts = self.options.bursts
            rate = base + sum(bursts[i].extra_rate(base) for i in self._bursts_at(offset))
            if index:
                previous = segments[-1]
                first = previous.first + (offset - previous.offset) * previous.rate
            segments.append(_Segment(offset, first, rate))
        return segments

    def _bursts_at(self, offset: float) -> list[int]:
        return [
            index
            for index, burst in enumerate(self.options.bursts)
            if burst.at.total_seconds() <= offset < (burst.at + burst.duration).total_seconds()
        ]

    def offset(self, position: int) -> float:
        """Seconds of event time from the start to ``position``'s ``meta.dt``."""
        firsts = [segment.first for segment in self._segments]
        segment = self._segments[bisect.bisect_right(firsts, position) - 1]
        return segment.offset + (position - segment.first) / segment.rate

    def time(self, position: int) -> datetime:
        """When ``position`` is due: its event's ``meta.dt`` (a repeat carries its original's)."""
        return self.start + timedelta(seconds=self.offset(position))

    def position_at(self, moment: datetime) -> int:
        """The first position whose slot time is at or after ``moment``."""
        offset = (moment - self.start).total_seconds()
        if offset <= 0:
            return 0
        offsets = [segment.offset for segment in self._segments]
        segment = self._segments[bisect.bisect_right(offsets, offset) - 1]
        position = max(0, math.ceil(segment.first + (offset - segment.offset) * segment.rate))
        # time() rounds to the microsecond: step to the exact first slot at or after the moment.
        while position > 0 and self.time(position - 1) >= moment:
            position -= 1
        while self.time(position) < moment:
            position += 1
        return position

    # -- events ----------------------------------------------------------------------------

    def _rng(self, position: int, salt: int = 0) -> random.Random:
        return random.Random((self.options.seed * 1_000_003 + salt) * 0x9E3779B1 + position)

    def _is_canary(self, position: int) -> bool:
        every = self._canary_every
        if every is None or position == 0:
            return False
        # The first position of each interval of event time.
        return int(self.offset(position) // every) > int(self.offset(position - 1) // every)

    def label(self, position: int) -> Label:
        """What ``position`` was made to be."""
        return self._make(position)[0]

    def event(self, position: int) -> bytes:
        """The payload at ``position``: one JSON object, as EventStreams' ``data:`` carries."""
        return self._make(position)[1]

    def events(self, count: int | None = None, first: int = 0) -> Iterator[bytes]:
        """Payloads from ``first`` on (``count`` of them, or without end)."""
        positions = itertools.count(first) if count is None else range(first, first + count)
        for position in positions:
            yield self.event(position)

    def labelled(self, count: int, first: int = 0) -> list[tuple[Label, bytes]]:
        return [self._make(position) for position in range(first, first + count)]

    def burst_labels(self) -> list[dict[str, Any]]:
        """The side file: one record per injected burst."""
        return [burst.label(self.start) for burst in self.options.bursts]

    def _make(self, position: int) -> tuple[Label, bytes]:
        if self._is_canary(position):
            return self._canary(position)
        options = self.options
        rng = self._rng(position)
        if position > 0 and rng.random() < options.duplicate_rate:
            reach = min(options.duplicate_reach, position)
            original = position - 1 - rng.randrange(reach)
            label, data = self._make(original)
            if label.role is not Role.CANARY:
                return _as_duplicate(label, position), data
        return self._change(position, rng)

    def _canary(self, position: int) -> tuple[Label, bytes]:
        rng = self._rng(position, salt=1)
        event_id = str(_uuid4(rng))
        moment = self.time(position)
        event = {
            "$schema": CURRENT_SCHEMAS[0],
            "meta": {
                "uri": "https://canary/Canary_event",
                "request_id": str(_uuid4(rng)),
                "id": event_id,
                "dt": _iso(moment),
                "domain": CANARY_DOMAIN,
                "stream": STREAM,
            },
            "type": "edit",
            "namespace": 0,
            "title": "Canary event",
            "bot": False,
            "timestamp": int(moment.timestamp()),
            "wiki": "canarywiki",
            "server_name": CANARY_DOMAIN,
        }
        return Label(position, Role.CANARY, position, event_id), orjson.dumps(event)

    def _change(self, position: int, rng: random.Random) -> tuple[Label, bytes]:
        options = self.options
        offset = self.offset(position)
        burst_index = self._pick_burst(offset, rng)
        burst = None if burst_index is None else options.bursts[burst_index]
        legacy = rng.random() < options.legacy_share
        if burst is None:
            wiki = _WIKI_CHOICE.pick(rng)
            kind = _TYPE_CHOICE.pick(rng)
        elif burst.kind is BurstKind.WIKI:
            wiki, kind = burst.wiki, _TYPE_CHOICE.pick(rng)
        else:
            wiki, kind = burst.wiki, ChangeKind.EDIT
        if burst is not None and burst.kind is BurstKind.PAGE:
            editor_kind = EditorKind.REGISTERED
            user: str | None = f"{burst.title} watcher {rng.randrange(burst.editors) + 1}"
            namespace, title = 0, burst.title
        else:
            editor_kind = _EDITOR_CHOICE.pick(rng)
            user = _user(editor_kind, wiki, rng, options.seed)
            namespace, title = _page(kind, wiki, rng)
        log = None
        if kind is ChangeKind.LOG:
            log = LOG_ACTIONS[rng.randrange(len(LOG_ACTIONS))]
            if log[2]:
                namespace, title = log[2], NAMESPACES[log[2]][0] + title.split(":", 1)[-1]
        moment = self.start + timedelta(seconds=offset)
        event_id = str(_uuid4(rng))
        event = _event(
            kind=kind,
            wiki=wiki,
            namespace=namespace,
            title=title,
            user=user,
            bot=editor_kind is EditorKind.BOT,
            moment=moment,
            event_id=event_id,
            legacy=legacy,
            schema=CURRENT_SCHEMAS[rng.random() < options.schema_101_share],
            legacy_schema=LEGACY_SCHEMAS[rng.random() < 0.3],
            log=log,
            rng=rng,
            position=position,
        )
        label = Label(
            position=position,
            role=Role.CHANGE if burst is None else Role.BURST,
            original=position,
            event_id=event_id,
            kind=kind,
            editor=editor_kind,
            wiki=wiki,
            namespace=namespace,
            title=title,
            user=user,
            legacy=legacy,
            burst=burst_index,
        )
        return label, orjson.dumps(event)

    def _pick_burst(self, offset: float, rng: random.Random) -> int | None:
        active = self._bursts_at(offset)
        if not active:
            return None
        base = self.options.rate
        extras = [self.options.bursts[index].extra_rate(base) for index in active]
        draw = rng.random() * (base + sum(extras))
        for index, extra in zip(active, extras, strict=True):
            draw -= extra
            if draw < 0:
                return index
        return None


def _as_duplicate(original: Label, position: int) -> Label:
    return Label(
        position=position,
        role=Role.DUPLICATE,
        original=original.original,
        event_id=original.event_id,
        kind=original.kind,
        editor=original.editor,
        wiki=original.wiki,
        namespace=original.namespace,
        title=original.title,
        user=original.user,
        legacy=original.legacy,
        burst=original.burst,
    )


# ---- one event ------------------------------------------------------------------------------


def _uuid4(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _iso(moment: datetime, *, legacy: bool = False) -> str:
    moment = moment.astimezone(UTC)
    if legacy:
        return moment.replace(microsecond=0).isoformat()  # 2018-03-07T16:16:17+00:00
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user(kind: EditorKind, wiki: str, rng: random.Random, seed: int) -> str | None:
    rank = _ZIPF.pick(rng)
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


def _page(kind: ChangeKind, wiki: str, rng: random.Random) -> tuple[int, str]:
    rank = _ZIPF.pick(rng)
    if kind is ChangeKind.CATEGORIZE:
        namespace = 14
    elif wiki == "wikidatawiki":
        namespace = _WD_NS_CHOICE.pick(rng)
    else:
        namespace = _NS_CHOICE.pick(rng)
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


def _event(
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
            "request_id": str(_uuid4(rng)),
            "id": event_id,
            "dt": _iso(moment, legacy=True),
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
            "request_id": str(_uuid4(rng)),
            "id": event_id,
            "dt": _iso(moment),
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
