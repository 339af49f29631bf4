"""The world the synthetic stream is drawn from: wikis and their shares, namespaces, change types,
kinds of editor, log actions, the pieces of names and titles, and weighted choices over them."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

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


WIKI_INDEX = {wiki: (server, share) for wiki, server, share in WIKIS}
TOTAL_SHARE = sum(share for _, _, share in WIKIS)
WIKI_SHARE = {wiki: share / TOTAL_SHARE for wiki, _, share in WIKIS}


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


class Choice:
    """Weighted choice with a precomputed cumulative table."""

    def __init__(self, items: Sequence[Any], weights: Sequence[float]) -> None:
        self.items = tuple(items)
        self.cumulative = _cumulative(weights)
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


WIKI_CHOICE = Choice([w for w, _, _ in WIKIS], [s for _, _, s in WIKIS])
TYPE_CHOICE = Choice([t for t, _ in TYPE_SHARES], [s for _, s in TYPE_SHARES])
EDITOR_CHOICE = Choice([e for e, _ in EDITOR_SHARES], [s for _, s in EDITOR_SHARES])
NAMESPACE_CHOICE = Choice(list(NAMESPACES), [s for _, s in NAMESPACES.values()])
WIKIDATA_NAMESPACE_CHOICE = Choice(
    list(WIKIDATA_NAMESPACES), [s for _, s in WIKIDATA_NAMESPACES.values()]
)
#: Editors and pages per wiki follow a Zipf-like law: a few very busy, a long tail.
POOL = 2000
ZIPF = Choice(range(POOL), [1 / (rank + 1) for rank in range(POOL)])
