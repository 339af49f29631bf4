"""The synthetic stream (infra/replay/synthetic.py) makes what it says it makes. No broker.

Expectations come from the module's share tables and options, the generator's labels and
mappings written here; observations from the raw JSON (orjson) or from app.normalize.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import random
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.contract import Canary, RecentChange
from app.normalize import normalize
from infra.replay.bursts import Burst, BurstKind
from infra.replay.cli import main
from infra.replay.synthetic import Role, StreamOptions, SyntheticStream
from infra.replay.world import EDITOR_SHARES, TYPE_SHARES, WIKIS, EditorKind
from tests.events import USER_KIND_OF_EDITOR

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEGACY_SCHEMAS = {"mediawiki/recentchange/1", "mediawiki/recentchange/2"}

WIKI_BURST = Burst(
    BurstKind.WIKI, "enwiki", timedelta(minutes=2), timedelta(minutes=2), multiplier=4.0
)
PAGE_BURST = Burst(
    BurstKind.PAGE, "dewiki", timedelta(minutes=5), timedelta(minutes=1),
    title="Harbour festival", editors=6, edits=150,
)  # fmt: skip


def stream(**options: Any) -> SyntheticStream:
    return SyntheticStream(StreamOptions(start=START, **options))


def decoded(events: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(data) for data in events]


def dt(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["meta"]["dt"])


def first_of_each_id(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each meta.id once (repeats dropped), canaries excluded: the distinct changes."""
    seen: set[str] = set()
    changes = []
    for event in events:
        if event["meta"]["id"] not in seen and event["meta"]["domain"] != "canary":
            changes.append(event)
        seen.add(event["meta"]["id"])
    return changes


def shares(counts: Counter[Any], total: int) -> dict[Any, float]:
    return {key: count / total for key, count in counts.items()}


def table_shares(table: Any) -> dict[Any, float]:
    weights = {row[0]: row[-1] for row in table}
    total = sum(weights.values())
    return {key: weight / total for key, weight in weights.items()}


def editor_kind(event: dict[str, Any]) -> EditorKind:
    """Who made a change, read from the raw JSON by hand."""
    user = event.get("user")
    if user is None:
        return EditorKind.HIDDEN
    if event["bot"]:
        return EditorKind.BOT
    try:
        address = ipaddress.ip_address(user)
    except ValueError:
        pass
    else:
        return EditorKind.ANONYMOUS_V4 if address.version == 4 else EditorKind.ANONYMOUS_V6
    return EditorKind.TEMPORARY if re.match(r"~\d{4}-\d+-\d+$", user) else EditorKind.REGISTERED


# ---- determinism and random access ----------------------------------------------------------


def test_same_seed_same_bytes_and_another_seed_other_events() -> None:
    first = list(stream(seed=3).events(2000))
    assert list(stream(seed=3).events(2000)) == first
    other = list(stream(seed=4).events(2000))
    assert all(a != b for a, b in zip(first, other, strict=True))
    ids = {event["meta"]["id"] for event in decoded(first)}
    assert not ids & {event["meta"]["id"] for event in decoded(other)}


def test_random_access_equals_sequential_generation() -> None:
    options = {
        "duplicate_rate": 0.02,
        "canary_interval": timedelta(seconds=10),
        "bursts": (WIKI_BURST,),
        "legacy_share": 0.3,
    }
    sequential = list(stream(**options).events(6000))
    fresh = stream(**options)
    positions = list(range(6000))
    random.Random(5).shuffle(positions)
    for position in positions[:1500]:
        assert fresh.event(position) == sequential[position], position
    assert list(fresh.events(500, first=4321)) == sequential[4321:4821]
    pairs = fresh.labelled(200, first=5000)
    assert [data for _, data in pairs] == sequential[5000:5200]
    assert [label.position for label, _ in pairs] == list(range(5000, 5200))


# ---- every event is what its label says ------------------------------------------------------


def test_every_event_normalizes_to_what_its_label_predicts() -> None:
    synthetic = stream(
        legacy_share=0.3,
        duplicate_rate=0.01,
        canary_interval=timedelta(seconds=30),
        bursts=(WIKI_BURST, PAGE_BURST),
    )
    pairs = synthetic.labelled(20_000)
    events = [data for _, data in pairs]
    for label, data in pairs:
        if label.role is Role.CANARY:
            assert isinstance(normalize(data), Canary), label
            assert orjson.loads(data)["meta"]["domain"] == "canary"
            continue
        if label.role is Role.DUPLICATE:
            original = pairs[label.original][0]
            assert label.original < label.position
            assert original.role in (Role.CHANGE, Role.BURST)
            assert data == events[label.original]
            assert orjson.loads(data)["meta"]["id"] == label.event_id == original.event_id
            continue
        typed = normalize(data)
        assert isinstance(typed, RecentChange), label
        assert typed.event_id == label.event_id
        assert label.kind is not None and label.editor is not None
        assert typed.type.value == label.kind.value
        assert (typed.wiki, typed.namespace, typed.title) == (
            label.wiki,
            label.namespace,
            label.title,
        )
        assert typed.user == label.user
        assert typed.user_kind is USER_KIND_OF_EDITOR[label.editor], label
        assert (typed.source_schema in LEGACY_SCHEMAS) == label.legacy
        if label.role is Role.BURST:
            assert label.burst is not None
            assert typed.wiki == synthetic.options.bursts[label.burst].wiki
        else:
            assert label.burst is None
    roles = Counter(label.role for label, _ in pairs)
    assert set(roles) == set(Role)
    editors = {label.editor for label, _ in pairs if label.role is Role.CHANGE}
    assert editors == set(EditorKind)


# ---- the mixes -----------------------------------------------------------------------------


def test_mixes_follow_the_share_tables_and_options() -> None:
    count, legacy_share, duplicate_rate = 20_000, 0.25, 0.01
    options = StreamOptions(start=START, legacy_share=legacy_share, duplicate_rate=duplicate_rate)
    events = decoded(list(SyntheticStream(options).events(count)))
    changes = first_of_each_id(events)
    total = len(changes)

    repeats = count - len({event["meta"]["id"] for event in events})
    assert repeats / count == pytest.approx(duplicate_rate, abs=0.003)

    observed = shares(Counter(event["type"] for event in changes), total)
    for kind, share in table_shares(TYPE_SHARES).items():
        assert observed.get(kind.value, 0) == pytest.approx(share, abs=0.02), kind

    observed = shares(Counter(editor_kind(event) for event in changes), total)
    for editor, share in table_shares(EDITOR_SHARES).items():
        assert observed.get(editor, 0) == pytest.approx(share, abs=0.02), editor
    assert observed[EditorKind.BOT] == pytest.approx(0.40, abs=0.02)

    wikis = Counter(event["wiki"] for event in changes)
    observed = shares(wikis, total)
    for wiki, share in table_shares(WIKIS).items():
        assert observed.get(wiki, 0) == pytest.approx(share, abs=0.015), wiki
    assert [wiki for wiki, _ in wikis.most_common(2)] == ["commonswiki", "wikidatawiki"]

    legacy = [event for event in changes if "$schema" not in event]
    assert len(legacy) / total == pytest.approx(legacy_share, abs=0.02)
    assert {event["meta"]["schema_uri"] for event in legacy} == LEGACY_SCHEMAS
    current = [event["$schema"] for event in changes if "$schema" in event]
    newer = current.count("/mediawiki/recentchange/1.0.1") / len(current)
    assert newer == pytest.approx(options.schema_101_share, abs=0.015)
    assert set(current) == {"/mediawiki/recentchange/1.0.0", "/mediawiki/recentchange/1.0.1"}


# ---- the shapes a pipeline must cope with --------------------------------------------------


@pytest.fixture(scope="module")
def mixed_events() -> list[dict[str, Any]]:
    """Changes of both envelopes, each once."""
    return first_of_each_id(decoded(list(stream(legacy_share=0.5).events(8000))))


def test_new_pages_have_no_old_length_or_revision(mixed_events: list[dict[str, Any]]) -> None:
    new_pages = [event for event in mixed_events if event["type"] == "new"]
    current = [event for event in new_pages if "$schema" in event]
    legacy = [event for event in new_pages if "$schema" not in event]
    assert current and legacy
    for event in current:
        assert "old" not in event["length"] and "old" not in event["revision"]
        assert isinstance(event["length"]["new"], int)
    for event in legacy:
        assert event["length"]["old"] is None and event["revision"]["old"] is None
        assert isinstance(event["length"]["new"], int)
    for event in mixed_events:
        if event["type"] == "edit":
            assert isinstance(event["length"]["old"], int)
            assert isinstance(event["revision"]["old"], int)


def test_log_events_carry_no_revision_nor_length(mixed_events: list[dict[str, Any]]) -> None:
    logs = [event for event in mixed_events if event["type"] == "log"]
    current = [event for event in logs if "$schema" in event]
    legacy = [event for event in logs if "$schema" not in event]
    assert current and legacy
    for event in logs:
        assert "revision" not in event and "length" not in event
        assert event["log_type"] and event["log_action"]
    # Legacy log events send a null rc id; current ones leave it out on some.
    assert all("id" in event and event["id"] is None for event in legacy)
    assert any("id" not in event for event in current)
    assert all(isinstance(event["id"], int) for event in current if "id" in event)


def test_timestamps_run_out_of_order_against_meta_dt() -> None:
    events = decoded(list(stream(duplicate_rate=0.0, canary_interval=None).events(3000)))
    for event in events:
        assert event["timestamp"] <= dt(event).timestamp()
    pairs = list(itertools.pairwise(events))
    inverted = [(a, b) for a, b in pairs if dt(b) > dt(a) and b["timestamp"] < a["timestamp"]]
    assert 0 < len(inverted) < len(pairs) / 2
    legacy = decoded(list(stream(legacy_share=1.0, canary_interval=None).events(500)))
    for event in legacy:
        assert event["timestamp"] == int(dt(event).timestamp())


def test_canaries_arrive_once_per_interval_of_event_time() -> None:
    count, rate, every = 12_000, 40.0, 30
    events = decoded(list(stream(rate=rate, canary_interval=timedelta(seconds=every))
                          .events(count)))  # fmt: skip
    canaries = [event for event in events if event["meta"]["domain"] == "canary"]
    intervals = int((count - 1) / rate // every)  # 299.975 s of event time: 9 of them
    assert [dt(event) for event in canaries] == [
        START + timedelta(seconds=every * k) for k in range(1, intervals + 1)
    ]
    # A repeat never repeats a canary.
    repeats = decoded(list(stream(duplicate_rate=0.2, canary_interval=timedelta(seconds=2))
                           .events(4000)))  # fmt: skip
    canary_ids = Counter(e["meta"]["id"] for e in repeats if e["meta"]["domain"] == "canary")
    assert len(canary_ids) == int(3999 / 40 // 2) and set(canary_ids.values()) == {1}


def test_meta_dt_follows_start_and_rate() -> None:
    rate, count = 7.0, 3000
    events = decoded(list(stream(rate=rate, legacy_share=0.3, duplicate_rate=0.0).events(count)))
    for position, event in enumerate(events):
        due = START + timedelta(seconds=position / rate)
        # meta.dt is written to the millisecond (legacy: to the second), truncated.
        resolution = timedelta(seconds=1 if "$schema" not in event else 0.001)
        assert timedelta(0) <= due - dt(event) < resolution, position
    span = dt(events[-1]) - dt(events[0])
    assert span.total_seconds() == pytest.approx((count - 1) / rate, abs=1)


# ---- bursts -------------------------------------------------------------------------------


def test_bursts_add_what_they_describe() -> None:
    synthetic = stream(duplicate_rate=0.0, canary_interval=None, bursts=(WIKI_BURST, PAGE_BURST))
    end = START + timedelta(minutes=8)
    events = []
    for data in synthetic.events():
        event = orjson.loads(data)
        if dt(event) >= end:
            break
        events.append(event)

    window_start, window_end = START + WIKI_BURST.at, START + WIKI_BURST.at + WIKI_BURST.duration
    inside = [e for e in events if e["wiki"] == "enwiki" and window_start <= dt(e) < window_end]
    outside = [
        e for e in events if e["wiki"] == "enwiki" and not window_start <= dt(e) < window_end
    ]
    rate_inside = len(inside) / WIKI_BURST.duration.total_seconds()
    rate_outside = len(outside) / (8 * 60 - WIKI_BURST.duration.total_seconds())
    assert rate_outside == pytest.approx(40 * table_shares(WIKIS)["enwiki"], rel=0.1)
    assert rate_inside / rate_outside == pytest.approx(WIKI_BURST.multiplier, abs=0.5)

    page = [e for e in events if (e["wiki"], e["title"]) == ("dewiki", "Harbour festival")]
    # Exactly its edits, by exactly its editors (25 each), each once (no repeats here).
    assert len(page) == len({event["meta"]["id"] for event in page}) == 150
    users = Counter(event["user"] for event in page)
    assert users == {f"Harbour festival watcher {n}": 25 for n in range(1, 7)}
    page_start = START + PAGE_BURST.at
    assert all(page_start <= dt(e) < page_start + PAGE_BURST.duration for e in page)
    assert {(event["type"], event["namespace"]) for event in page} == {("edit", 0)}

    assert synthetic.burst_labels() == [
        {
            "kind": "wiki",
            "wiki": "enwiki",
            "start": "2024-05-01T12:02:00.000Z",
            "end": "2024-05-01T12:04:00.000Z",
            "multiplier": 4.0,
        },
        {
            "kind": "page",
            "wiki": "dewiki",
            "start": "2024-05-01T12:05:00.000Z",
            "end": "2024-05-01T12:06:00.000Z",
            "title": "Harbour festival",
            "editors": 6,
            "edits": 150,
        },
    ]


def test_a_page_burst_places_exactly_its_edits_between_canaries_and_repeats() -> None:
    """A canary every tenth of a second (every fourth position) takes many of the burst's slots,
    and 5 % of positions repeat an earlier event: the page still gets each of its 40 edits once,
    from its 7 editors in turn."""
    burst = Burst(BurstKind.PAGE, "frwiki", timedelta(seconds=5), timedelta(seconds=10),
                  title="Pont Neuf", editors=7, edits=40)  # fmt: skip
    synthetic = stream(duplicate_rate=0.05, canary_interval=timedelta(seconds=0.1),
                       bursts=(burst,))  # fmt: skip
    pairs = synthetic.labelled(synthetic.position_at(START + timedelta(seconds=20)))
    edits = {label.event_id: label.user for label, _ in pairs if label.role is Role.BURST}
    assert len(edits) == 40
    assert Counter(edits.values()) == {
        f"Pont Neuf watcher {n}": 6 if n <= 5 else 5 for n in range(1, 8)
    }
    canaries = {label.position for label, _ in pairs if label.role is Role.CANARY}
    firsts = [label.position for label, _ in pairs if label.role is Role.BURST]
    assert any(position - 1 in canaries for position in firsts)  # some slots went past one


def test_page_bursts_may_not_overlap() -> None:
    later = dataclasses.replace(PAGE_BURST, title="Other", at=PAGE_BURST.at + timedelta(seconds=30))
    with pytest.raises(ValueError, match="page bursts must not overlap"):
        StreamOptions(bursts=(PAGE_BURST, later))


def test_a_silenced_wiki_has_no_event_and_the_others_keep_their_rates() -> None:
    silence = Burst(BurstKind.SILENCE, "enwiki", timedelta(minutes=3), timedelta(minutes=4))
    synthetic = stream(duplicate_rate=0.0, canary_interval=None, bursts=(silence, PAGE_BURST))
    start, end = START + silence.at, START + silence.at + silence.duration
    events = []
    for data in synthetic.events():
        event = orjson.loads(data)
        if dt(event) >= START + timedelta(minutes=10):
            break
        events.append(event)
    during = [e for e in events if start <= dt(e) < end]
    assert not [e for e in during if e["wiki"] == "enwiki"]
    shares = table_shares(WIKIS)
    # The others: 40 events/s times their share, as outside the silence.
    frwiki = [e for e in during if e["wiki"] == "frwiki"]
    assert len(frwiki) / (4 * 60) == pytest.approx(40 * shares["frwiki"], rel=0.15)
    assert len(during) / (4 * 60) == pytest.approx(40 * (1 - shares["enwiki"]), rel=0.05)
    before = [e for e in events if e["wiki"] == "enwiki" and dt(e) < start]
    assert len(before) / (3 * 60) == pytest.approx(40 * shares["enwiki"], rel=0.15)
    # The page burst inside the silence still comes.
    assert len([e for e in events if e["title"] == "Harbour festival"]) > 100
    assert synthetic.burst_labels()[0] == {
        "kind": "silence",
        "wiki": "enwiki",
        "start": "2024-05-01T12:03:00.000Z",
        "end": "2024-05-01T12:07:00.000Z",
    }


@pytest.mark.parametrize("rate", [40.0, 7.0, 0.7])
def test_position_at_finds_the_position_of_a_time(rate: float) -> None:
    synthetic = stream(rate=rate, bursts=(WIKI_BURST, PAGE_BURST))
    for position in range(0, 30_000, 7):
        moment = synthetic.time(position)
        assert synthetic.position_at(moment) == position
        assert synthetic.position_at(moment + timedelta(microseconds=1)) == position + 1
    assert synthetic.position_at(START - timedelta(hours=1)) == 0


# ---- python -m infra.replay generate -----------------------------------------------------------


def generate(*arguments: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra.replay", "generate", *arguments],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_generate_writes_the_stream(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.ndjson"
    generate("--seed", "7", "--events", "2000", "--out", str(out), "--start", START.isoformat())
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 2001
    assert lines[:-1] == list(SyntheticStream(StreamOptions(seed=7, start=START)).events(2000))
    assert not list(tmp_path.glob("*.bursts.json"))


def test_generate_writes_the_bursts_side_file(tmp_path: Path) -> None:
    out = tmp_path / "bursts.ndjson"
    generate(
        "--seed", "9", "--events", "3000", "--out", str(out), "--start", "2024-05-01T12:00:00",
        "--burst", "wiki=enwiki,times=4,at=0.5,minutes=0.5",
        "--burst", "wiki=frwiki,times=0,at=0.25,minutes=0.5",
        "--burst", "wiki=dewiki,page=Harbour_festival,editors=3,edits=20,at=1,minutes=0.25",
    )  # fmt: skip
    bursts = (
        Burst(BurstKind.WIKI, "enwiki", timedelta(seconds=30), timedelta(seconds=30), 4.0),
        Burst(BurstKind.SILENCE, "frwiki", timedelta(seconds=15), timedelta(seconds=30), 0.0),
        Burst(
            BurstKind.PAGE, "dewiki", timedelta(minutes=1), timedelta(seconds=15),
            title="Harbour festival", editors=3, edits=20,
        ),
    )  # fmt: skip
    expected = SyntheticStream(StreamOptions(seed=9, start=START, bursts=bursts)).events(3000)
    assert out.read_bytes().splitlines() == list(expected)
    assert orjson.loads((tmp_path / "bursts.bursts.json").read_bytes()) == [
        {
            "kind": "wiki",
            "wiki": "enwiki",
            "start": "2024-05-01T12:00:30.000Z",
            "end": "2024-05-01T12:01:00.000Z",
            "multiplier": 4.0,
        },
        {
            "kind": "silence",
            "wiki": "frwiki",
            "start": "2024-05-01T12:00:15.000Z",
            "end": "2024-05-01T12:00:45.000Z",
        },
        {
            "kind": "page",
            "wiki": "dewiki",
            "start": "2024-05-01T12:01:00.000Z",
            "end": "2024-05-01T12:01:15.000Z",
            "title": "Harbour festival",
            "editors": 3,
            "edits": 20,
        },
    ]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("wiki=nowiki,times=3,minutes=1", "unknown wiki 'nowiki'"),
        ("wiki=enwiki,times=3", "'minutes' is missing"),
        ("wiki=enwiki,times=lots,minutes=1", "times='lots' is not a number"),
        ("enwiki", "'enwiki' is not KEY=VALUE"),
        ("wiki=enwiki,times=3,minutes=1,colour=red", "unknown colour"),
        ("wiki=enwiki,times=1,minutes=1", "a multiplier above 1"),
        ("wiki=enwiki,page=Harbour,editors=9,edits=3,minutes=1", "1 <= editors <= edits"),
        ("wiki=enwiki,times=2,minutes=0", "the duration must be positive"),
    ],
)
def test_generate_rejects_a_bad_burst(
    spec: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never.ndjson"
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--events", "10", "--out", str(out), "--burst", spec])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--burst" in error and problem in error, error
    assert not out.exists()
