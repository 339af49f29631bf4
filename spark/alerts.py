"""The job's alert step: after each batch, the minutes that have closed since the last step are
evaluated, in event time, for per-wiki surges and drops (:mod:`spark.spikes`) and trending pages
(``trending_pages()``, migration 0006), and the ``alerts`` table follows (migration 0007).

A minute is closed once no event of it can be counted any more, so that its counts in
``wiki_activity`` and ``page_activity`` are final. Spark drops an event as late when it is older
than the watermark of the batch *before* its own (the late-event watermark, so that chained
stateful operators agree), and that watermark trails the newest event time of the batches
before that by ``spark.windowing.watermark``. So after a batch, every minute ending at or before
(the newest minute written up to the *previous* step) − ``watermark`` is final: the step
remembers that newest minute from one batch to the next.

Everything the step knows between runs is in PostgreSQL — the open episodes in ``alerts``, the
newest minute evaluated in ``alert_progress`` — and it writes its changes, their notifications
(the webhooks' outbox) and its progress in one transaction. A restart, a retried batch or a
replay therefore evaluates each minute once, and an episode is keyed by its first minute:
evaluating its minutes again opens nothing new and notifies nobody twice.

The first step of a deployment starts one ``alerts.spikes.baseline`` before the newest closed
minute (a month of history is not alerted on, webhooks and all); after that, at most
``MAX_MINUTES_PER_STEP`` minutes per batch, so that catching up after a long stop does not hold
up the aggregates.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg2.extensions

from app.alerts.payload import CLOSED, OPENED, PAGE_TRENDING, WIKI_DROP, WIKI_SURGE
from app.config.settings import Settings
from spark import TABLE_PAGE_ACTIVITY, TABLE_WIKI_ACTIVITY
from spark.sink import PostgresSink
from spark.spikes import UPDATED, Change, Episode, evaluate_wiki, page_surprise, wiki_pace

log = logging.getLogger(__name__)

#: The detector's row in alert_progress.
DETECTOR = "alerts"
MAX_MINUTES_PER_STEP = 240
#: trending_pages()'s max_rows when the step asks: every page over the alert's bar.
TRENDING_ROWS = 1000

Cursor = psycopg2.extensions.cursor
PageKey = tuple[str, int, str]
#: Edits per minute, by wiki.
Counts = dict[str, dict[datetime, int]]


@dataclass(frozen=True)
class StepReport:
    """What one step did: the minutes it evaluated and the changes it wrote."""

    minutes: int = 0
    last: datetime | None = None
    opened: int = 0
    closed: int = 0


class AlertStep:
    """Run after each batch's write, on the job's sink connection."""

    def __init__(self, settings: Settings, sink: PostgresSink) -> None:
        self.settings = settings
        self.sink = sink
        self.window = settings.spark.windowing.duration
        self.delay = settings.spark.windowing.watermark + self.window
        self.urls = list(settings.alerts.webhooks.urls)

    def run(self) -> StepReport:
        return self.sink.transaction(self._step)

    # ---- one step, one transaction -----------------------------------------------------------

    def _step(self, cursor: Cursor) -> StepReport:
        cursor.execute(f"SELECT min(window_start), max(window_start) FROM {TABLE_WIKI_ACTIVITY}")
        stream_start, newest = _one(cursor)
        if newest is None:
            return StepReport()
        # Serializes two jobs on one database (a v1 and a v2 job during a migration).
        cursor.execute(
            "SELECT evaluated_through, newest_minute FROM alert_progress WHERE detector = %s "
            "FOR UPDATE",
            (DETECTOR,),
        )
        evaluated_through, newest_before = cursor.fetchone() or (None, None)
        self._save_progress(cursor, evaluated_through, newest)
        if newest_before is None:
            return StepReport()
        closed_through = newest_before - self.delay
        if evaluated_through is None:
            first = max(stream_start, closed_through - self.settings.alerts.spikes.baseline)
        else:
            first = evaluated_through + self.window
        last = min(closed_through, first + self.window * (MAX_MINUTES_PER_STEP - 1))
        if last < first:
            return StepReport()
        count = int((last - first) / self.window) + 1
        minutes = [first + self.window * step for step in range(count)]
        edits, people = self._wiki_counts(cursor, minutes)
        changes = self._wiki_changes(cursor, minutes, stream_start, edits)
        opened, closed = self._apply_wiki(cursor, changes)
        page_opened, page_closed = self._pages(cursor, minutes, stream_start, people)
        self._save_progress(cursor, last, newest)
        report = StepReport(count, last, opened + page_opened, closed + page_closed)
        if report.opened or report.closed:
            log.info(
                "alerts: evaluated %d minutes up to %s: %d opened, %d closed",
                report.minutes, last.isoformat(), report.opened, report.closed,
            )  # fmt: skip
        return report

    def _save_progress(
        self, cursor: Cursor, evaluated_through: datetime | None, newest: datetime
    ) -> None:
        cursor.execute(
            """
            INSERT INTO alert_progress (detector, evaluated_through, newest_minute)
            VALUES (%s, %s, %s)
            ON CONFLICT (detector) DO UPDATE
            SET evaluated_through = EXCLUDED.evaluated_through,
                newest_minute = EXCLUDED.newest_minute, updated_at = now()
            """,
            (DETECTOR, evaluated_through, newest),
        )

    # ---- wikis -------------------------------------------------------------------------------

    def _wiki_counts(self, cursor: Cursor, minutes: list[datetime]) -> tuple[Counts, Counts]:
        """Each wiki's edits per minute, and those of the people the trending rule counts
        (bots too with ``with_bots``), from the first minute's baseline (before its pages'
        horizon) to the last minute."""
        baseline = self.settings.alerts.spikes.baseline
        trending = self.settings.alerts.trending
        first = minutes[0] - baseline + min(timedelta(0), self.window - trending.horizon)
        cursor.execute(
            f"""
            SELECT wiki, window_start, edits, bot_edits FROM {TABLE_WIKI_ACTIVITY}
            WHERE window_start >= %s AND window_start <= %s
            """,
            (first, minutes[-1]),
        )
        edits: Counts = defaultdict(dict)
        people: Counts = defaultdict(dict)
        for wiki, minute, count, bot_count in cursor.fetchall():
            edits[wiki][minute] = count
            people[wiki][minute] = count if trending.with_bots else count - bot_count
        return edits, people

    def _wiki_changes(
        self, cursor: Cursor, minutes: list[datetime], stream_start: datetime, counts: Counts
    ) -> dict[str, tuple[int | None, list[Change]]]:
        rules = self.settings.alerts.spikes
        cursor.execute(
            """
            SELECT id, wiki, kind, window_start, window_end, detected_window_end, observed,
                   expected, deviation, score
            FROM alerts WHERE closed_at IS NULL AND kind IN (%s, %s)
            """,
            (WIKI_SURGE, WIKI_DROP),
        )
        open_episodes = {
            wiki: (id_, Episode(kind, start, end, detected, observed, expected, deviation, score))
            for id_, wiki, kind, start, end, detected, observed, expected, deviation, score
            in cursor.fetchall()
        }  # fmt: skip
        # A wiki that never reaches either rule's volume cannot alert: not worth its medians.
        floor = min(rules.surge_min_edits, rules.drop_min_baseline)
        result: dict[str, tuple[int | None, list[Change]]] = {}
        for wiki in set(counts) | set(open_episodes):
            id_, episode = open_episodes.get(wiki, (None, None))
            wiki_counts = counts.get(wiki, {})
            if episode is None and max(wiki_counts.values(), default=0) < floor:
                continue
            changes = evaluate_wiki(
                wiki_counts, minutes, open_episode=episode, stream_start=stream_start,
                rules=rules, window=self.window,
            )  # fmt: skip
            if changes:
                result[wiki] = (id_, changes)
        return result

    def _apply_wiki(
        self, cursor: Cursor, changes: dict[str, tuple[int | None, list[Change]]]
    ) -> tuple[int, int]:
        opened = closed = 0
        for wiki, (id_, wiki_changes) in sorted(changes.items()):
            for change in wiki_changes:
                episode = change.episode
                if change.action == OPENED:
                    id_, new = self._open(
                        cursor, episode.kind, wiki, None, None, None, episode.window_start,
                        episode.window_end, episode.detected_window_end, episode.observed,
                        episode.expected, episode.deviation, episode.score,
                    )  # fmt: skip
                    opened += new
                elif change.action == UPDATED:
                    self._update(cursor, id_, episode.window_end, episode.observed,
                                 episode.expected, episode.score)  # fmt: skip
                elif change.action == CLOSED:
                    closed += self._close(cursor, id_)
        return opened, closed

    # ---- pages -------------------------------------------------------------------------------

    def _pages(
        self, cursor: Cursor, minutes: list[datetime], stream_start: datetime, people: Counts
    ) -> tuple[int, int]:
        trending = self.settings.alerts.trending
        cursor.execute(
            """
            SELECT id, wiki, namespace, title FROM alerts
            WHERE closed_at IS NULL AND kind = %s
            """,
            (PAGE_TRENDING,),
        )
        open_pages: dict[PageKey, int] = {(w, n, t): id_ for id_, w, n, t in cursor.fetchall()}
        opened = closed = 0
        for minute in minutes:
            at = minute + self.window
            if at - trending.horizon - stream_start < trending.min_history:
                continue  # too little past to judge a page by
            cursor.execute(
                "SELECT wiki, namespace, title, server_name, edits, expected, score "
                "FROM trending_pages(%s, %s, %s, %s, %s, %s, %s) WHERE score >= %s",
                (at, trending.horizon, trending.baseline, trending.min_editors,
                 trending.with_bots, TRENDING_ROWS, trending.min_growth,
                 trending.alert_score / 2),
            )  # fmt: skip
            scores = {(w, n, t): (server, edits, expected, score)
                      for w, n, t, server, edits, expected, score in cursor.fetchall()}  # fmt: skip
            for key, id_ in list(open_pages.items()):
                if key in scores:
                    _, edits, expected, score = scores[key]
                    self._update(cursor, id_, at, edits, expected, score)
                else:
                    closed += self._close(cursor, id_)
                    del open_pages[key]
            for key, (server, edits, expected, score) in sorted(scores.items()):
                if key in open_pages or score < trending.alert_score:
                    continue
                pace = wiki_pace(
                    people.get(key[0], {}), at - trending.horizon, at, less=edits,
                    stream_start=stream_start, rules=self.settings.alerts.spikes,
                    window=self.window,
                )  # fmt: skip
                if page_surprise(edits, expected, pace) > trending.alert_p_value:
                    continue  # a busy page's ordinary luck, or its wiki's surge
                start = self._first_page_minute(cursor, key, at)
                id_, new = self._open(cursor, PAGE_TRENDING, *key, server, start, at, at, edits,
                                      expected, None, score)  # fmt: skip
                open_pages[key] = id_
                opened += new
        return opened, closed

    def _first_page_minute(self, cursor: Cursor, key: PageKey, at: datetime) -> datetime:
        """The episode's first minute: the page's first counted edit within the horizon."""
        trending = self.settings.alerts.trending
        cursor.execute(
            f"""
            SELECT min(window_start) FROM {TABLE_PAGE_ACTIVITY}
            WHERE wiki = %s AND namespace = %s AND title = %s
              AND window_start >= %s AND window_start < %s
              AND (%s OR edits > bot_edits)
            """,
            (*key, at - trending.horizon, at, trending.with_bots),
        )
        first: datetime = _one(cursor)[0]
        return first

    # ---- writes ------------------------------------------------------------------------------

    def _open(self, cursor: Cursor, *values: Any) -> tuple[int, int]:
        """Insert an episode (unless its key is there) and, when new, its notification:
        (its id, 1 if new else 0)."""
        cursor.execute(
            """
            INSERT INTO alerts (kind, wiki, namespace, title, server_name, window_start,
                window_end, detected_window_end, observed, expected, deviation, score)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (kind, wiki, coalesce(namespace, -1), coalesce(title, ''), window_start)
            DO NOTHING
            RETURNING id
            """,
            values,
        )
        row = cursor.fetchone()
        if row is not None:
            self._notify(cursor, row[0], OPENED)
            return row[0], 1
        kind, wiki, namespace, title, _, window_start = values[:6]
        cursor.execute(
            """
            SELECT id FROM alerts WHERE kind = %s AND wiki = %s
                AND coalesce(namespace, -1) = coalesce(%s, -1)
              AND coalesce(title, '') = coalesce(%s, '') AND window_start = %s
            """,
            (kind, wiki, namespace, title, window_start),
        )
        return int(_one(cursor)[0]), 0

    def _update(
        self, cursor: Cursor, id_: int | None, window_end: datetime, observed: float,
        expected: float, score: float,
    ) -> None:  # fmt: skip
        cursor.execute(
            """
            UPDATE alerts SET window_end = %s, observed = %s, expected = %s, score = %s,
                updated_at = now()
            WHERE id = %s AND (window_end, observed, expected, score)
                IS DISTINCT FROM (%s, %s::float8, %s::float8, %s::float8)
            """,
            (window_end, observed, expected, score, id_, window_end, observed, expected, score),
        )

    def _close(self, cursor: Cursor, id_: int | None) -> int:
        cursor.execute(
            "UPDATE alerts SET closed_at = now(), updated_at = now() "
            "WHERE id = %s AND closed_at IS NULL",
            (id_,),
        )
        if not cursor.rowcount:
            return 0
        self._notify(cursor, id_, CLOSED)
        return 1

    def _notify(self, cursor: Cursor, alert_id: int | None, event: str) -> None:
        """The outbox: a notification, and a delivery to each webhook configured now."""
        cursor.execute(
            """
            INSERT INTO alert_notifications (alert_id, event) VALUES (%s, %s)
            ON CONFLICT (alert_id, event) DO NOTHING RETURNING id
            """,
            (alert_id, event),
        )
        row = cursor.fetchone()
        if row is None or not self.urls:
            return
        _insert_deliveries(cursor, row[0], self.urls)


def _insert_deliveries(cursor: Cursor, notification_id: int, urls: Iterable[str]) -> None:
    for url in urls:
        cursor.execute(
            "INSERT INTO alert_deliveries (notification_id, url) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (notification_id, url),
        )


def _one(cursor: Cursor) -> tuple[Any, ...]:
    """The row a query that always returns one returned."""
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)
