"""spark/spikes.py's rules over edits per minute written by hand, with the default knobs
(alerts.spikes in conf.yaml: baseline 60 minutes, history 30, a surge ≥ 10 edits, ≥ 3× the
median and ≥ 6 deviations above it; a drop to ≤ 0.1× a median ≥ 10 for 2 minutes). The
expected medians, deviations and scores are worked out by hand in the comments."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from app.alerts.payload import CLOSED, OPENED, WIKI_DROP, WIKI_SURGE
from app.config import load_settings
from spark.spikes import UPDATED, evaluate_wiki, page_surprise, wiki_pace

MINUTE = timedelta(minutes=1)
START = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
RULES = load_settings(environ={}).alerts.spikes


def minute(n: int) -> datetime:
    return START + n * MINUTE


def run(counts: list[int], *, first: int = 0, open_episode=None):  # type: ignore[no-untyped-def]
    """Evaluate minutes ``first`` … end of ``counts`` (minute n has counts[n] edits)."""
    by_minute = {minute(n): count for n, count in enumerate(counts) if count}
    minutes = [minute(n) for n in range(first, len(counts))]
    return evaluate_wiki(by_minute, minutes, open_episode=open_episode, stream_start=START,
                         rules=RULES, window=MINUTE)  # fmt: skip


#: 40 steady minutes (18, 20, 22 in turn: median 20, MAD 2), a 3-minute surge, 10 steady ones.
STEADY = [18, 20, 22] * 13 + [20]
SURGE = [*STEADY, 100, 110, 96, *([20] * 10)]


def test_a_surge_after_a_steady_half_hour_opens_once_goes_on_and_closes() -> None:
    changes = run(SURGE)
    assert [(c.action, c.episode.window_start, c.episode.window_end) for c in changes] == [
        (OPENED, minute(40), minute(41)),
        (UPDATED, minute(40), minute(42)),
        (UPDATED, minute(40), minute(43)),
        (CLOSED, minute(40), minute(43)),  # closed as it was: the minute at 20 is not in it
    ]
    opened = changes[0].episode
    # median 20; deviation max(1.4826 × 2, √20, 1) = √20 = 4.472; (100 - 20) / 4.472 = 17.89
    assert opened.kind == WIKI_SURGE and opened.detected_window_end == minute(41)
    assert opened.expected == 20 and opened.deviation == pytest.approx(math.sqrt(20))
    assert opened.score == pytest.approx(80 / math.sqrt(20))
    assert changes[2].episode.observed == 96
    assert changes[2].episode.score == pytest.approx(76 / math.sqrt(20))


def test_the_same_minutes_in_two_runs_give_the_same_changes() -> None:
    """A restart in the middle of the episode carries on from the episode it left open."""
    whole = run(SURGE)
    before = run(SURGE[:42])  # up to minute 41: opened, updated once
    after = run(SURGE, first=42, open_episode=before[-1].episode)
    assert before + after == whole


def test_no_alert_before_half_an_hour_of_history() -> None:
    assert run([20] * 20 + [200, 200, 20]) == []
    assert [c.action for c in run([20] * 30 + [200, 20])] == [OPENED, CLOSED]


@pytest.mark.parametrize(
    ("peak", "alerts"),
    [
        (9, False),  # fewer than 10 edits: a quiet wiki's busy minute
        (12, True),  # median 1, deviation 1: (12 - 1) / 1 = 11 deviations, 12× the median
        (55, False),  # on a wiki at 20 a minute: 7.8 deviations, but 2.75× the median
    ],
)
def test_a_surge_needs_volume_deviations_and_ratio(peak: int, alerts: bool) -> None:
    base = 20 if peak == 55 else 1
    changes = run([base] * 45 + [peak, base])
    assert bool(changes) is alerts


def test_a_busy_wiki_falling_silent_for_two_minutes_is_a_drop() -> None:
    counts = [30] * 60 + [2, 0, 1, 30, 30]
    changes = run(counts)
    assert [(c.action, c.episode.window_start, c.episode.window_end) for c in changes] == [
        # 2 ≤ 3 and 0 ≤ 3 (0.1 × 30): opened at the first of them, known at the second's end
        (OPENED, minute(60), minute(62)),
        (UPDATED, minute(60), minute(63)),
        (CLOSED, minute(60), minute(63)),
    ]
    opened = changes[0].episode
    assert opened.kind == WIKI_DROP and opened.detected_window_end == minute(62)
    # median 30, deviation √30; (30 - 0) / √30
    assert opened.score == pytest.approx(30 / math.sqrt(30))


def test_one_silent_minute_or_a_quiet_wiki_is_no_drop() -> None:
    assert run([30] * 60 + [0, 30, 30]) == []
    assert run([5] * 60 + [0, 0, 0]) == []  # median 5: below drop_min_baseline (10)


def test_a_pages_surprise_is_the_poisson_tail_of_its_past() -> None:
    # 6 edits where 0.3 are expected: 0.3^6 / 6! × e^-0.3 × (1 + 0.3/7 + 0.3²/56 + …)
    assert page_surprise(6, 0.3) == pytest.approx(7.834e-7, rel=1e-3)
    # No past: 0.1 expected at least; 4 edits: 0.1^4 / 4! × e^-0.1 × (1 + 0.1/5 + 0.1²/30)
    assert page_surprise(4, 0.0) == pytest.approx(3.8468e-6, rel=1e-3)
    assert page_surprise(0, 5.0) == 1.0
    assert page_surprise(3, 1000.0) == pytest.approx(1.0)  # fewer than usual: no surprise
    assert 0 < page_surprise(2000, 1000.0) < 1e-150  # far out: no overflow, no underflow to 0


def test_a_wikis_pace_is_its_horizon_over_its_usual_minutes() -> None:
    def pace(counts: list[int], less: int = 0) -> float:
        """The horizon: the last 15 minutes of ``counts``."""
        return wiki_pace(
            {minute(n): count for n, count in enumerate(counts)}, minute(len(counts) - 15),
            minute(len(counts)), less=less, stream_start=START, rules=RULES, window=MINUTE,
        )  # fmt: skip

    # 20 a minute for the baseline hour, then 10 minutes as usual and 5 at 100: (10 × 20 +
    # 5 × 100) / (15 × 20) = 700 / 300.
    assert pace([20] * 60 + [20] * 10 + [100] * 5) == pytest.approx(700 / 300)
    # The page's own 40 edits are not its wiki's pace: (700 − 40) / 300.
    assert pace([20] * 60 + [20] * 10 + [100] * 5, less=40) == pytest.approx(660 / 300)
    # As usual, or quieter: 1. No baseline yet (the stream begins with the horizon): 1.
    assert pace([20] * 75) == 1.0 and pace([20] * 60 + [5] * 15) == 1.0
    assert pace([100] * 15) == 1.0
    # The median, not the mean: a past surge does not make the usual pace faster.
    assert pace([20] * 50 + [400] * 10 + [40] * 15) == pytest.approx(600 / 300)


def test_a_page_on_a_surging_wiki_is_judged_at_the_wikis_pace() -> None:
    # 5 edits where 0.1 are expected (no past): 0.1^5 / 5! × e^-0.1 × (1 + 0.1/6 + …) = 7.7e-8,
    # an alert (≤ 1e-6). On a wiki at 7/3 its usual rate, 0.2333 are: 0.2333^5 / 5! ×
    # e^-0.2333 × (1 + 0.2333/6 + 0.2333²/42 + …) = 4.75e-6, none.
    assert page_surprise(5, 0.0) == pytest.approx(7.67e-8, rel=1e-2)
    assert page_surprise(5, 0.0, pace=700 / 300) == pytest.approx(4.75e-6, rel=1e-2)
    # A real story stands out anyway: 12 edits at 0.233 expected, 1.4e-16.
    assert page_surprise(12, 0.0, pace=700 / 300) < 1e-15
