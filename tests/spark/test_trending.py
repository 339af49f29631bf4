"""trending_pages() (migrations 0006, 0008, 0009) over page_activity rows written by hand, the
expected scores worked out by hand from the formula: editors × (edits + 1) / (expected + 1)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import query

pytestmark = pytest.mark.integration

#: The end of the horizon: what the callers pass (the newest window_end they know).
AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
INSERT = (
    "INSERT INTO page_activity (window_start, window_end, wiki, namespace, title, server_name, "
    "edits, editors, bot_edits, anonymous_edits, bytes_added, bytes_removed, new_page, "
    "editor_names, bot_names) VALUES (%s, %s, 'itwiki', 0, %s, 'it.wikipedia.org', %s, %s, %s, "
    "0, 0, 0, false, %s, %s)"
)
TRENDING = "SELECT title, edits, editors, expected, score FROM trending_pages(%s, with_bots => %s)"


def edit(db: Settings, minutes_before: int, title: str, edits: int, names: list[str],
         bots: tuple[str, ...] = ()) -> None:  # fmt: skip
    start = AT - minutes_before * MINUTE
    bot_edits = edits if bots and set(names) == set(bots) else len(bots)
    query(db, INSERT, (start, start + MINUTE, title, edits, len(names), bot_edits, sorted(names),
                       sorted(bots)))  # fmt: skip


@pytest.fixture
def db(job_settings: JobSettings) -> Settings:
    settings = job_settings()
    # "Roma": one edit a minute all day and now, by three editors in turn: its usual pace.
    query(
        settings,
        "INSERT INTO page_activity (window_start, window_end, wiki, namespace, title, "
        "server_name, edits, editors, bot_edits, anonymous_edits, bytes_added, bytes_removed, "
        "new_page, editor_names, bot_names) "
        "SELECT %(at)s - m * interval '1 minute', %(at)s - (m - 1) * interval '1 minute', "
        "'itwiki', 0, 'Roma', 'it.wikipedia.org', 1, 1, 0, 0, 0, 0, false, "
        "ARRAY[(ARRAY['Ada', 'Bruno', 'Carla'])[m %% 3 + 1]], '{}' "
        "FROM generate_series(1, 24 * 60 + 15) AS m",
        {"at": AT},
    )
    # "Pisa": nothing before; 6 edits by 4 people in the last 5 minutes.
    edit(settings, 5, "Pisa", 2, ["Dario", "Elena"])
    edit(settings, 3, "Pisa", 1, ["Dario"])
    edit(settings, 2, "Pisa", 2, ["Fabio", "Elena"])
    edit(settings, 1, "Pisa", 1, ["Gina"])
    # "Bari": one editor's 30 quick saves.
    for minute in range(1, 11):
        edit(settings, minute, "Bari", 3, ["Ugo"])
    # "Lecce": 20 edits by four bots.
    edit(settings, 4, "Lecce", 20, ["Bot-A", "Bot-B", "Bot-C", "Bot-D"],
         ("Bot-A", "Bot-B", "Bot-C", "Bot-D"))  # fmt: skip
    # "Siena": two people and a bot; and an edit 16 minutes ago, before the horizon.
    edit(settings, 2, "Siena", 3, ["Anna", "Bot-X", "Ivo"], ("Bot-X",))
    edit(settings, 16, "Siena", 1, ["Anna"])
    return settings


def test_a_sudden_burst_by_several_people_trends_and_a_pages_usual_pace_scores_low(
    db: Settings,
) -> None:
    # Pisa: editors 4, edits 6, expected 0: 4 × 7 / 1 = 28.
    # Roma: editors 3, edits 15; 1440 edits in the 24 hours before: expected
    # 1440 × 15 / 1440 = 15; 3 × 16 / 16 = 3, but it has not grown: (15 + 1) / (15 + 1) = 1,
    # below min_growth (3). With min_growth 0 it is listed.
    # Bari (one editor), Lecce (bots only) and Siena (two people, the bot left out) do not.
    assert query(db, TRENDING, (AT, False)) == [("Pisa", 6, 4, 0.0, 28.0)]
    assert query(
        db,
        "SELECT title, edits, editors, expected, score FROM trending_pages(%s, min_growth => 0)",
        (AT,),
    ) == [("Pisa", 6, 4, 0.0, 28.0), ("Roma", 15, 3, 15.0, 3.0)]


def test_with_bots_the_bots_count(db: Settings) -> None:
    # Lecce: 4 × 21 / 1 = 84. Siena: 3 editors, 3 edits in the horizon, 1 before it (expected
    # 1 × 15 / 1440): 3 × 4 / (1 + 15 / 1440) = 12 × 1440 / 1455. (Roma has not grown.)
    rows = query(db, TRENDING, (AT, True))
    assert [row[:4] for row in rows] == [
        ("Lecce", 20, 4, 0.0),
        ("Pisa", 6, 4, 0.0),
        ("Siena", 3, 3, 15 / 1440),
    ]
    assert [row[4] for row in rows] == pytest.approx([84.0, 28.0, 12 * 1440 / 1455])


def test_the_knobs_horizon_baseline_editors_and_rows(db: Settings) -> None:
    # A 2-minute horizon holds Pisa's last two minutes only: Elena, Fabio, Gina; 3 edits.
    # Its past (the day before) holds its 3 earlier edits: expected 3 × 2 / 1440.
    rows = query(
        db,
        "SELECT title, edits, editors, expected FROM trending_pages(%s, interval '2 minutes', "
        "interval '24 hours', min_editors => 3, max_rows => 1)",
        (AT,),
    )
    assert rows == [("Pisa", 3, 3, 3 * 2 / 1440)]
    assert query(db, "SELECT title FROM trending_pages(%s, min_editors => 5)", (AT,)) == []


def test_a_young_deployment_judges_a_page_by_the_past_it_has(job_settings: JobSettings) -> None:
    """page_activity begins 60 minutes before AT: "Nuova" had 40 edits in the 45 minutes before
    the horizon, and has 10 by 4 people in it. Its past covers 45 minutes of the baseline:
    expected 40 × 15 / 45 = 13.3, growth (10 + 1) / 14.3 < 3: not trending (over a whole day,
    40 × 15 / 1440 = 0.42 would have made it look new). "Fresca", new in the horizon, is."""
    db = job_settings()
    edit(db, 60, "Nuova", 6, ["Ada"])  # page_activity's first minute
    for minute in range(16, 50):  # 34 more before the horizon: 40
        edit(db, minute, "Nuova", 1, ["Ada"])
    for minute in range(1, 11):
        edit(db, minute, "Nuova", 1, [["Ada", "Bruno", "Carla", "Dario"][minute % 4]])
    edit(db, 3, "Fresca", 5, ["Elena", "Fabio", "Gina"])
    assert query(db, TRENDING, (AT, False)) == [("Fresca", 5, 3, 0.0, 18.0)]
    ((expected,),) = query(
        db, "SELECT expected FROM trending_pages(%s, min_growth => 0) WHERE title = 'Nuova'",
        (AT,),
    )  # fmt: skip
    assert expected == pytest.approx(40 * 15 / 45)


def reference(rows: list[tuple], at: datetime, *, horizon: timedelta, baseline: timedelta,
              min_editors: int, with_bots: bool, min_growth: float) -> list[tuple]:  # fmt: skip
    """The formula above in plain Python, over (minute, title, edits, names, bots) rows."""
    first = min(row[0] for row in rows)
    known = max(0.0, min(baseline, at - horizon - first).total_seconds())
    recent: dict[str, int] = {}
    names: dict[str, set[str]] = {}
    past: dict[str, int] = {}
    for start, title, edits, editors, bots in rows:
        counted = edits - (0 if with_bots else (edits if set(editors) == set(bots) else len(bots)))
        if at - horizon <= start < at:
            recent[title] = recent.get(title, 0) + counted
            names.setdefault(title, set()).update(
                name for name in editors if with_bots or name not in bots
            )
        elif at - horizon - baseline <= start < at - horizon:
            past[title] = past.get(title, 0) + counted
    listed = []
    for title, edits in recent.items():
        expected = past.get(title, 0) * horizon.total_seconds() / known if known else 0.0
        if (
            edits
            and len(names[title]) >= min_editors
            and (edits + 1) / (expected + 1) >= min_growth
        ):
            score = len(names[title]) * (edits + 1) / (expected + 1)
            listed.append((title, edits, len(names[title]), expected, score))
    return sorted(listed, key=lambda row: (-row[4], -row[1], row[0]))


@pytest.mark.parametrize("with_bots", [False, True])
@pytest.mark.parametrize(("min_editors", "min_growth"), [(3, 3.0), (2, 0.0), (4, 1.5)])
def test_random_pages_are_scored_as_the_formula_says(
    job_settings: JobSettings, with_bots: bool, min_editors: int, min_growth: float
) -> None:
    """Migration 0009 narrows the pages before counting their editors; whatever it narrows, the
    rows must be the formula's. 40 pages edited at random over the last 90 minutes (a young
    deployment) or only lately, by 8 people and 3 bots, compared with :func:`reference`."""
    db = job_settings()
    chance = random.Random(f"{with_bots}-{min_editors}-{min_growth}")
    people = ["Ada", "Bruno", "Carla", "Dario", "Elena", "Fabio", "Gina", "Ivo"]
    bots = ["Bot-A", "Bot-B", "Bot-C"]
    rows = []
    for page in range(40):
        busy = chance.random()
        # Some pages all along, some new within the horizon (they have no past: growth).
        for minutes_before in range(1, chance.choice([90, 60, 30, 14, 8]) + 1):
            if chance.random() > busy / 3:
                continue
            names = chance.sample(people + bots, chance.randint(1, 4))
            edits = len(names) + chance.randint(0, 3)
            page_bots = tuple(name for name in names if name in bots)
            edit(db, minutes_before, f"Page {page:02d}", edits, names, page_bots)
            rows.append((AT - minutes_before * MINUTE, f"Page {page:02d}", edits, names, page_bots))
    expected = reference(
        rows, AT, horizon=timedelta(minutes=15), baseline=timedelta(hours=24),
        min_editors=min_editors, with_bots=with_bots, min_growth=min_growth,
    )  # fmt: skip
    listed = query(
        db,
        "SELECT title, edits, editors, expected, score FROM trending_pages(%s, "
        "min_editors => %s, with_bots => %s, max_rows => 1000, min_growth => %s)",
        (AT, min_editors, with_bots, min_growth),
    )
    assert len(expected) >= 3, "the random pages should list a few"
    assert [row[:3] for row in listed] == [row[:3] for row in expected]
    assert [row[3:] for row in listed] == [pytest.approx(row[3:]) for row in expected]
