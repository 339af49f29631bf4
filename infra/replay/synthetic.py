"""A synthetic ``recentchange`` stream of our own: deterministic by seed, random access by position.

Written from the official schema's field list (mediawiki/recentchange 1.0.0/1.0.1, and the legacy
``mediawiki/recentchange/1`` and ``/2`` envelopes), at mixes close to the live stream's: types,
wikis (a Zipf-like share, commons and wikidata heavy), namespaces, bots, anonymous (IPv4/IPv6),
temporary, hidden and registered editors with names in many scripts. It also makes what a
pipeline must cope with: ``length.old`` absent on new pages, log events without ``revision`` /
``length`` and with ``id`` absent or null, ``timestamp`` out of order against ``meta.dt``,
repeats of an earlier ``meta.id``, canary events, and labelled bursts for the analytics (a wiki
at N× its rate, a page edited by K people, a wiki gone silent).

Every event is a pure function of (options, position): the replay server can serve an endless
stream, resume at any ``Last-Event-ID`` and answer ``since`` without keeping anything, and the
same seed gives the same bytes on every machine. :meth:`SyntheticStream.label` says what each
position was made to be, so tests compare the pipeline against the generator's intent, not
against the pipeline's own code.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from infra.replay.bursts import Burst, BurstKind
from infra.replay.payload import iso, page, payload, user_name, uuid4
from infra.replay.world import (
    CANARY_DOMAIN,
    CURRENT_SCHEMAS,
    EDITOR_CHOICE,
    LEGACY_SCHEMAS,
    LIVE_RATE,
    LOG_ACTIONS,
    NAMESPACES,
    STREAM,
    TYPE_CHOICE,
    WIKI_CHOICE,
    ChangeKind,
    EditorKind,
)

# ---- options and labels ---------------------------------------------------------------------


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
        pages = sorted((b for b in self.bursts if b.kind is BurstKind.PAGE), key=lambda b: b.at)
        for before, after in itertools.pairwise(pages):
            if after.at < before.at + before.duration:
                raise ValueError(
                    "burst: page bursts must not overlap (each places exactly its edits)"
                )


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
        page_edit = self._page_edit(position)
        if page_edit is not None:
            return self._change(position, rng, page_edit)
        if position > 0 and rng.random() < options.duplicate_rate:
            reach = min(options.duplicate_reach, position)
            original = position - 1 - rng.randrange(reach)
            label, data = self._make(original)
            if label.role is not Role.CANARY:
                return _as_duplicate(label, position), data
        return self._change(position, rng)

    def _canary(self, position: int) -> tuple[Label, bytes]:
        rng = self._rng(position, salt=1)
        event_id = str(uuid4(rng))
        moment = self.time(position)
        event = {
            "$schema": CURRENT_SCHEMAS[0],
            "meta": {
                "uri": "https://canary/Canary_event",
                "request_id": str(uuid4(rng)),
                "id": event_id,
                "dt": iso(moment),
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

    def _change(
        self, position: int, rng: random.Random, page_edit: tuple[int, int] | None = None
    ) -> tuple[Label, bytes]:
        options = self.options
        offset = self.offset(position)
        burst_index = self._pick_burst(offset, rng) if page_edit is None else page_edit[0]
        burst = None if burst_index is None else options.bursts[burst_index]
        legacy = rng.random() < options.legacy_share
        if burst is None:
            wiki = WIKI_CHOICE.pick(rng)
            silenced = self._silenced(offset)
            while wiki in silenced:  # drawn again: the others keep their rates
                wiki = WIKI_CHOICE.pick(rng)
            kind = TYPE_CHOICE.pick(rng)
        elif burst.kind is BurstKind.WIKI:
            wiki, kind = burst.wiki, TYPE_CHOICE.pick(rng)
        else:
            wiki, kind = burst.wiki, ChangeKind.EDIT
        if burst is not None and page_edit is not None:
            editor_kind = EditorKind.REGISTERED
            # Its editors in turn: exactly ``editors`` of them.
            user: str | None = f"{burst.title} watcher {page_edit[1] % burst.editors + 1}"
            namespace, title = 0, burst.title
        else:
            editor_kind = EDITOR_CHOICE.pick(rng)
            user = user_name(editor_kind, wiki, rng, options.seed)
            namespace, title = page(kind, wiki, rng)
        log = None
        if kind is ChangeKind.LOG:
            log = LOG_ACTIONS[rng.randrange(len(LOG_ACTIONS))]
            if log[2]:
                namespace, title = log[2], NAMESPACES[log[2]][0] + title.split(":", 1)[-1]
        moment = self.start + timedelta(seconds=offset)
        event_id = str(uuid4(rng))
        event = payload(
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

    def _silenced(self, offset: float) -> frozenset[str]:
        bursts = self.options.bursts
        return frozenset(
            bursts[index].wiki
            for index in self._bursts_at(offset)
            if bursts[index].kind is BurstKind.SILENCE
        )

    def _page_edit(self, position: int) -> tuple[int, int] | None:
        """(the page burst, the edit's number) when ``position`` carries a page burst's edit.

        Edit k of a burst of E edits over D seconds is due (k + 0.5) × D / E after the burst's
        start, and is the first position at or after that moment that is not a canary: so a
        burst places exactly its E edits (while it is less than half of the stream's rate).
        """
        offset: float | None = None
        previous: float | None = None
        for index, burst in enumerate(self.options.bursts):
            if burst.kind is not BurstKind.PAGE:
                continue
            start = burst.at.total_seconds()
            if offset is None:
                offset = self.offset(position)
            if offset < start:
                continue
            spacing = burst.duration.total_seconds() / burst.edits
            due = (offset - start) / spacing  # edits due by this position, + 0.5
            number = math.floor(due - 0.5)
            if not 0 <= number < burst.edits:
                continue
            if previous is None:
                before = position - 1
                if before > 0 and self._is_canary(before):
                    before -= 1  # the canary's slot falls to this position
                previous = -math.inf if before < 0 else self.offset(before)
            if (previous - start) / spacing < number + 0.5:
                return index, number
        return None

    def _pick_burst(self, offset: float, rng: random.Random) -> int | None:
        """The wiki burst this change belongs to, drawn by the bursts' shares of the rate."""
        bursts, rate = self.options.bursts, self.options.rate
        current = self._bursts_at(offset)
        active = [i for i in current if bursts[i].kind is BurstKind.WIKI]
        if not active:
            return None
        # The base stream's rate, less what silences take from it.
        silences = [i for i in current if bursts[i].kind is BurstKind.SILENCE]
        base = rate + sum(bursts[i].extra_rate(rate) for i in silences)
        extras = [bursts[index].extra_rate(rate) for index in active]
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
