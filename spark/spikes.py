"""Surges and drops of a wiki's edits per minute against its own baseline: the pure rules.

No I/O and no clock: :func:`evaluate_wiki` folds a wiki's closed minutes, in event time, into
alert changes, given the episode open before them. :mod:`spark.alerts` feeds it from
``wiki_activity`` and keeps its state (the open episodes, the newest minute evaluated) in
PostgreSQL, so that evaluating the same minutes again gives the same episodes.

The baseline is robust: the **median** of the wiki's edits per minute over the ``baseline``
before the minute (minutes without edits count as 0), and its deviation
``max(1.4826 × MAD, √median, 1)`` — the MAD alone is 0 on a quiet wiki, and √median is the
spread a steady (Poisson) stream has anyway. A median is not moved by the burst it is judged
against, nor by a few odd minutes in its past; an EWMA is, and needs its own warm-up.

- **surge**: a minute with at least ``surge_min_edits`` edits, at least ``surge_min_ratio`` × the
  median and ``surge_deviations`` deviations above it opens an episode; it goes on while its
  minutes stay half as many deviations above the median frozen at its start;
- **drop**: on a wiki whose median is at least ``drop_min_baseline``, ``drop_minutes`` minutes in
  a row at or below ``drop_max_ratio`` × the median open an episode at the first of them; it goes
  on while its minutes stay at or below twice that fraction.

A minute less than ``min_history`` after the stream's first minute opens nothing: the baseline
before it is too short to judge by.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from app.alerts.payload import CLOSED, OPENED, WIKI_DROP, WIKI_SURGE
from app.config.settings import SpikeSettings

UPDATED = "updated"
#: The scale that makes a MAD estimate a normal distribution's standard deviation.
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class Baseline:
    median: float
    deviation: float


def baseline(counts: Sequence[int]) -> Baseline:
    """The median of ``counts`` and its robust deviation (module docstring)."""
    median = float(statistics.median(counts))
    mad = float(statistics.median(abs(count - median) for count in counts))
    return Baseline(median, max(MAD_SCALE * mad, math.sqrt(median), 1.0))


@dataclass(frozen=True)
class Episode:
    """An alert's episode as the rules see it: ``expected`` and ``deviation`` are the baseline
    frozen when it opened; ``observed`` and ``score`` are of its newest minute."""

    kind: str
    window_start: datetime
    window_end: datetime
    detected_window_end: datetime
    observed: float
    expected: float
    deviation: float
    score: float


@dataclass(frozen=True)
class Change:
    action: str  # OPENED, UPDATED or CLOSED
    episode: Episode


def evaluate_wiki(
    counts: Mapping[datetime, int],
    minutes: Sequence[datetime],
    *,
    open_episode: Episode | None,
    stream_start: datetime,
    rules: SpikeSettings,
    window: timedelta,
) -> list[Change]:
    """The changes that ``minutes`` (closed, ascending, each a window start) make to one wiki's
    alerts. ``counts``: its edits per minute, at least over the ``baseline`` before the first
    of ``minutes``; a minute it lacks had no edits."""
    changes: list[Change] = []
    history = round(rules.baseline / window)
    episode = open_episode
    for minute in minutes:
        count = counts.get(minute, 0)
        if episode is not None:
            change = _follow(episode, minute, count, rules, window)
            changes.append(change)
            episode = None if change.action == CLOSED else change.episode
            if episode is not None:
                continue
        if minute - stream_start < rules.min_history:
            continue
        opened = _surge(counts, minute, count, history, stream_start, rules, window)
        opened = opened or _drop(counts, minute, history, stream_start, rules, window)
        if opened is not None:
            changes.append(Change(OPENED, opened))
            episode = opened
    return changes


#: The least a page's past predicts for a horizon (edits): a page with no past is not certain to
#: stay silent, so a burst on it is surprising, not infinitely so.
EXPECTED_FLOOR = 0.1


def page_surprise(edits: int, expected: float, pace: float = 1.0) -> float:
    """The chance that a page whose past predicts ``expected`` edits in a horizon (at least
    :data:`EXPECTED_FLOOR`), on a wiki editing at ``pace`` times its usual rate
    (:func:`wiki_pace`), gets ``edits`` or more by chance alone: the Poisson tail. Thousands of
    pages are judged every minute, so a page alert asks for a small one
    (``alerts.trending.alert_p_value``)."""
    rate = max(expected, EXPECTED_FLOOR) * pace
    if edits <= rate:  # at most the usual: no surprise (and the tail is about 1)
        return 1.0 - sum(_poisson(k, rate) for k in range(edits))
    # Summed from `edits` up: the terms only shrink from there.
    term, total, k = _poisson(edits, rate), 0.0, edits
    while term > total * 1e-12:
        total += term
        k += 1
        term *= rate / k
    return min(total, 1.0)


def wiki_pace(
    counts: Mapping[datetime, int],
    start: datetime,
    end: datetime,
    *,
    less: int,
    stream_start: datetime,
    rules: SpikeSettings,
    window: timedelta,
) -> float:
    """How many times its usual rate a wiki edited over ``[start, end)`` (a page's trending
    horizon): its edits there, ``less`` the page's own, over its median minute in the
    ``baseline`` before ``start`` times the horizon's minutes; at least 1 (and 1 without a
    baseline). A surging wiki spreads its edits over its pages, and a page that gets more edits
    because its whole wiki does is not news: its chance is judged at the wiki's pace."""
    minutes = round((end - start) / window)
    edits = sum(counts.get(start + window * step, 0) for step in range(minutes)) - less
    history = _history(counts, start, round(rules.baseline / window), stream_start, window)
    usual = float(statistics.median(history)) * minutes if history else 0.0
    return max(1.0, edits / usual) if usual > 0 else 1.0


def _poisson(k: int, rate: float) -> float:
    """P(X = k) for a Poisson ``rate``, in logs (no overflow for large k)."""
    return math.exp(k * math.log(rate) - rate - math.lgamma(k + 1))


def _history(
    counts: Mapping[datetime, int],
    before: datetime,
    length: int,
    stream_start: datetime,
    window: timedelta,
) -> list[int]:
    """The counts of the ``length`` minutes before ``before`` (none before the stream began)."""
    minutes = (before - window * step for step in range(length, 0, -1))
    return [counts.get(minute, 0) for minute in minutes if minute >= stream_start]


def _surge(
    counts: Mapping[datetime, int],
    minute: datetime,
    count: int,
    history: int,
    stream_start: datetime,
    rules: SpikeSettings,
    window: timedelta,
) -> Episode | None:
    if count < rules.surge_min_edits:
        return None
    base = baseline(_history(counts, minute, history, stream_start, window))
    score = (count - base.median) / base.deviation
    if count < rules.surge_min_ratio * base.median or score < rules.surge_deviations:
        return None
    end = minute + window
    return Episode(WIKI_SURGE, minute, end, end, count, base.median, base.deviation, score)


def _drop(
    counts: Mapping[datetime, int],
    minute: datetime,
    history: int,
    stream_start: datetime,
    rules: SpikeSettings,
    window: timedelta,
) -> Episode | None:
    first = minute - window * (rules.drop_minutes - 1)
    if first - stream_start < rules.min_history:
        return None
    base = baseline(_history(counts, first, history, stream_start, window))
    if base.median < rules.drop_min_baseline:
        return None
    run = [counts.get(first + window * step, 0) for step in range(rules.drop_minutes)]
    if max(run) > rules.drop_max_ratio * base.median:
        return None
    count = run[-1]
    end = minute + window
    score = (base.median - count) / base.deviation
    return Episode(WIKI_DROP, first, end, end, count, base.median, base.deviation, score)


def _follow(
    episode: Episode, minute: datetime, count: int, rules: SpikeSettings, window: timedelta
) -> Change:
    """An open episode's next minute: it goes on (updated) or ends (closed, as it was)."""
    if episode.kind == WIKI_SURGE:
        score = (count - episode.expected) / episode.deviation
        goes_on = score >= rules.surge_deviations / 2
    else:
        score = (episode.expected - count) / episode.deviation
        goes_on = count <= 2 * rules.drop_max_ratio * episode.expected
    if not goes_on:
        return Change(CLOSED, episode)
    return Change(
        UPDATED, replace(episode, window_end=minute + window, observed=count, score=score)
    )
