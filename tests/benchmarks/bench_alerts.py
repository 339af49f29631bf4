"""Alert accuracy: precision, recall and detection delay of the alerts over the synthetic stream
with labelled bursts, through the whole pipeline.

    .venv/bin/python tests/benchmarks/bench_alerts.py [--hours 24] [--quiet-hours 24]
        [--rate 4000] [--reuse-services] [--smoke] [--json FILE]

A long stretch of compressed history: ``--hours`` of event time of the synthetic stream (40
events/s of event time, like the live stream; every namespace counted), served by the replay
server at ``--rate`` events/s through the worker and the Spark job (a 5 s trigger) with the
default alert settings, as ``./infra/wikipulse up --replay`` runs them. Into it go labelled
bursts (infra/replay/bursts.py), none in the first 90 minutes (the rules' history):

- **surges**: a wiki at 5× its rate for 3 or 5 minutes, on the wikis with at least 20 edits a
  minute (the issue's goal: recall ≥ 0.95, delay ≤ 2 minutes);
- **silences**: such a wiki without a single event for 10 minutes (a drop);
- **pages**: a new page edited 12 times by up to 5 people over 5 minutes (trending).

Then a second stream of ``--quiet-hours`` without bursts, another seed: every alert on it is a
false alert (goal: at most 1 per wiki per simulated day).

Each burst is **detected** when an alert of its kind on its wiki (and page) has its first minute
from one minute before the burst to its end (pages: from one trending horizon before); the
first such alert counts, any other is a false alert (a split episode). The **delay** is the end
of the minute whose evaluation opened the alert (``detected_window_end``) minus the burst's
start, in event time. **Precision** = alerts matched to a burst / all alerts of the bursty run.
The alerts come from PostgreSQL's ``alerts`` once the alert step has evaluated every closed
minute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.alerts.payload import PAGE_TRENDING, WIKI_DROP, WIKI_SURGE  # noqa: E402
from app.config import load_settings  # noqa: E402
from infra.replay.bursts import Burst, BurstKind  # noqa: E402
from infra.replay.world import TYPE_SHARES, WIKI_SHARE, ChangeKind  # noqa: E402
from infra.replay_server import ReplayMode  # noqa: E402
from tests.benchmarks.live_stack import LiveStack, connect, say  # noqa: E402
from tests.benchmarks.method import Goal, Report, add_arguments  # noqa: E402

EVENT_RATE = 40.0
MINUTE = timedelta(minutes=1)
#: No burst before this much history: the wiki rules need 30 minutes. Pages come third in
#: turn, from 140 minutes: after the 2 hours (and the horizon) a page alert needs.
QUIET_START = timedelta(minutes=90)
#: A burst every this much event time (surges, silences and pages in turn).
SPACING = timedelta(minutes=25)
SURGE_TIMES = 5.0
#: The issue's goal applies to wikis with at least this many edits a minute.
BUSY = 20.0
EDIT_SHARE = sum(share for kind, share in TYPE_SHARES if kind in (ChangeKind.EDIT, ChangeKind.NEW))
EDIT_SHARE /= sum(share for _, share in TYPE_SHARES)
KIND_OF_BURST = {BurstKind.WIKI: WIKI_SURGE, BurstKind.SILENCE: WIKI_DROP,
                 BurstKind.PAGE: PAGE_TRENDING}  # fmt: skip
NAMES = {WIKI_SURGE: "surges", WIKI_DROP: "silences", PAGE_TRENDING: "trending pages"}


def edits_per_minute(wiki: str, rate: float = EVENT_RATE) -> float:
    """What the stream gives a wiki: its share of the events, the edits' share of the types."""
    return rate * 60 * WIKI_SHARE[wiki] * EDIT_SHARE


def busy_wikis(rate: float = EVENT_RATE) -> list[str]:
    return sorted((w for w in WIKI_SHARE if edits_per_minute(w, rate) >= BUSY),
                  key=lambda w: -WIKI_SHARE[w])  # fmt: skip


def schedule(hours: float, rate: float = EVENT_RATE) -> list[Burst]:
    """Surges, silences and pages in turn, every SPACING from QUIET_START, ending before the
    last half hour (whose minutes the stream's end leaves unclosed)."""
    busy, small = busy_wikis(rate), [w for w in WIKI_SHARE if w not in busy_wikis(rate)]
    bursts: list[Burst] = []
    at, turn = QUIET_START, 0
    while at + timedelta(minutes=40) <= timedelta(hours=hours):
        wiki = busy[turn // 3 % len(busy)]
        if turn % 3 == 0:
            minutes = 3 if turn // 3 % 2 == 0 else 5
            bursts.append(Burst(BurstKind.WIKI, wiki, at, minutes * MINUTE,
                                multiplier=SURGE_TIMES))  # fmt: skip
        elif turn % 3 == 1:
            bursts.append(Burst(BurstKind.SILENCE, wiki, at, 10 * MINUTE))
        else:
            where = (busy + small)[turn // 3 % (len(busy) + len(small))]
            bursts.append(Burst(BurstKind.PAGE, where, at, 5 * MINUTE,
                                title=f"Breaking story {turn}", editors=5, edits=12))  # fmt: skip
        at += SPACING
        turn += 1
    return bursts


def burst_option(burst: Burst) -> str:
    """The replay server's ``--burst`` for ``burst`` (infra/replay/cli.py: parse_burst)."""
    at, minutes = burst.at / MINUTE, burst.duration / MINUTE
    where = f"wiki={burst.wiki},at={at:g},minutes={minutes:g}"
    if burst.kind is BurstKind.PAGE:
        title = burst.title.replace(" ", "_")
        return f"--burst={where},page={title},editors={burst.editors},edits={burst.edits}"
    return f"--burst={where},times={0 if burst.kind is BurstKind.SILENCE else burst.multiplier:g}"


@dataclass(frozen=True)
class Alert:
    kind: str
    wiki: str
    title: str | None
    window_start: datetime
    detected_window_end: datetime


def run_stream(
    *,
    seed: int,
    hours: float,
    rate: float,
    bursts: list[Burst],
    reuse_services: bool,
    steady: float = 30.0,
) -> tuple[datetime, list[Alert]]:
    """Serve the stream through the pipeline; its start (event time) and every alert."""
    events = round(EVENT_RATE * hours * 3600)
    origin = (datetime.now(UTC) - timedelta(hours=hours + 1)).replace(second=0, microsecond=0)
    options = (f"--rate={rate:g}", f"--event-rate={EVENT_RATE:g}", f"--events={events}",
               *(burst_option(b) for b in bursts))  # fmt: skip
    mode = ReplayMode.synthetic(options=options, seed=seed, origin=origin)
    say(f"serving {hours:g} h of event time ({events:,} events, {len(bursts)} bursts) at "
        f"{rate:,.0f} events/s …")  # fmt: skip
    with LiveStack(
        mode,
        reuse_services=reuse_services,
        INGESTION_WIKIMEDIA_FILTERS_NAMESPACES="[]",  # every namespace: the wikis' whole volume
        INGESTION_HEALTH_TIMEOUT="1 hour",
        SPARK_TRIGGER_PROCESSING_TIME="5 seconds",
        # A backfill's pace, not the live one (spark.driver.memory's comment): the default 512m
        # ran out of heap once a batch of a million records queued up behind an alert step.
        SPARK_DRIVER_MEMORY="2g",
        SPARK_MAX_OFFSETS_PER_TRIGGER="200000",
        POSTGRES_RETENTION_DAYS="100000",
    ) as live:
        wait_for_the_alert_step(live.settings, events, started=time.monotonic(), steady=steady)
        connection = connect(live.settings)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT kind, wiki, title, window_start, detected_window_end FROM alerts "
                    "ORDER BY window_start, id"
                )
                alerts = [Alert(*row) for row in cursor.fetchall()]
        finally:
            connection.close()
    return origin, alerts


def wait_for_the_alert_step(
    settings: Any, events: int, *, started: float, steady: float = 30.0
) -> None:
    """Until every closed minute is evaluated: the step's progress three minutes (window and
    watermark) behind the newest minute, nothing changed for ``steady`` seconds, and most of the
    events counted (repeats, canaries and log events of no wiki are not)."""
    last: tuple[Any, ...] | None = None
    steady_since = time.monotonic()
    while True:
        time.sleep(5)
        connection = connect(settings)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT coalesce(sum(events), 0), max(window_start) "
                               "FROM wiki_activity")  # fmt: skip
                counted, newest = cursor.fetchone()
                cursor.execute("SELECT evaluated_through FROM alert_progress")
                row = cursor.fetchone()
        finally:
            connection.close()
        state = (counted, newest, row[0] if row else None)
        elapsed = time.monotonic() - started
        if state != last:
            say(f"  {elapsed:6.0f} s: {counted:,} of {events:,} events aggregated, minutes "
                f"evaluated up to {state[2]}")  # fmt: skip
            last, steady_since = state, time.monotonic()
        elif (
            time.monotonic() - steady_since > steady
            and state[2] is not None
            and state[2] == newest - settings.spark.windowing.watermark - MINUTE
            and counted > 0.9 * events
        ):
            return
        if elapsed > 4 * 3600:
            raise RuntimeError("the pipeline did not get through the stream in 4 hours")


def match(
    origin: datetime, bursts: list[Burst], alerts: list[Alert], horizon: timedelta
) -> tuple[dict[int, Alert], list[Alert]]:
    """Each burst's first matching alert (by burst index), and the alerts that match none."""
    found: dict[int, Alert] = {}
    false: list[Alert] = []
    for alert in alerts:
        for index, burst in enumerate(bursts):
            start, end = origin + burst.at, origin + burst.at + burst.duration
            early = horizon if burst.kind is BurstKind.PAGE else MINUTE
            if (
                index not in found
                and alert.kind == KIND_OF_BURST[burst.kind]
                and alert.wiki == burst.wiki
                and (burst.kind is not BurstKind.PAGE or alert.title == burst.title)
                and start - early <= alert.window_start < end
            ):
                found[index] = alert
                break
        else:
            false.append(alert)
    return found, false


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, help="event time with bursts (default 24)")
    parser.add_argument("--quiet-hours", type=float,
                        help="event time without bursts (default 24; 0: none)")  # fmt: skip
    parser.add_argument("--rate", type=float, help="events/s served (default 4000)")
    parser.add_argument("--reuse-services", action="store_true",
                        help="the environment's Kafka and PostgreSQL")  # fmt: skip
    add_arguments(parser)
    args = parser.parse_args()
    hours = args.hours or (0.25 if args.smoke else 24.0)
    quiet_hours = args.quiet_hours if args.quiet_hours is not None else 0 if args.smoke else 24
    rate = args.rate or (6000.0 if args.smoke else 4000.0)
    report = Report("bench_alerts", smoke=args.smoke)
    horizon = load_settings().alerts.trending.horizon

    bursts = schedule(hours)
    steady = 10.0 if args.smoke else 30.0  # nothing left to come: the smoke stream is short
    origin, alerts = run_stream(seed=101, hours=hours, rate=rate, bursts=bursts,
                                reuse_services=args.reuse_services, steady=steady)  # fmt: skip
    found, false = match(origin, bursts, alerts, horizon)
    for index, burst in enumerate(bursts):
        alert = found.get(index)
        delay = None if alert is None else (alert.detected_window_end - origin - burst.at) / MINUTE
        say(
            f"  {burst.kind.value:8} {burst.wiki:14} {burst.title or '':20} at "
            f"{origin + burst.at:%H:%M}: " + ("missed" if delay is None else f"{delay:g} min")
        )
    for alert in false:
        say(f"  false: {alert.kind} {alert.wiki} {alert.title or ''} {alert.window_start:%H:%M}")

    for kind in (WIKI_SURGE, WIKI_DROP, PAGE_TRENDING):
        indexes = [i for i, b in enumerate(bursts) if KIND_OF_BURST[b.kind] == kind]
        hits = [i for i in indexes if i in found]
        delays = [(found[i].detected_window_end - origin - bursts[i].at) / MINUTE for i in hits]
        goal = kind == WIKI_SURGE
        recall = len(hits) / len(indexes) if indexes else None
        none = "" if indexes else "no burst of this kind: the stream is too short"
        report.add(f"recall_{kind}", f"recall, {NAMES[kind]}", recall, "",
                   goal=Goal(0.95) if goal else None, note=none,
                   bursts=len(indexes), detected=len(hits))  # fmt: skip
        none = "" if delays else "none detected"
        report.add(f"delay_{kind}_median", f"detection delay, {NAMES[kind]} (median)",
                   statistics.median(delays) if delays else None, "min of event time",
                   goal=Goal(2, at_least=False) if goal else None, note=none)  # fmt: skip
        report.add(f"delay_{kind}_max", f"detection delay, {NAMES[kind]} (max)",
                   max(delays) if delays else None, "min of event time",
                   goal=Goal(2, at_least=False) if goal else None, note=none)  # fmt: skip
    report.add("precision", "precision (alerts matching a burst / all alerts)",
               len(found) / len(alerts) if alerts else None, "",
               note="" if alerts else "no alert", alerts=len(alerts),
               false=len(false))  # fmt: skip

    if quiet_hours:
        _, quiet_alerts = run_stream(seed=202, hours=quiet_hours, rate=rate, bursts=[],
                                     reuse_services=args.reuse_services, steady=steady)  # fmt: skip
        per_wiki = Counter(alert.wiki for alert in quiet_alerts)
        days = quiet_hours / 24
        for alert in quiet_alerts:
            say(f"  quiet stream: {alert.kind} {alert.wiki} {alert.title or ''} "
                f"{alert.window_start:%H:%M}")  # fmt: skip
        worst = max(per_wiki.values(), default=0) / days
        report.add("false_per_wiki_day", "false alerts per wiki per simulated day, burst-free "
                   "stream (the worst wiki)", worst, "", goal=Goal(1, at_least=False),
                   alerts=len(quiet_alerts), wikis=dict(per_wiki), hours=quiet_hours)  # fmt: skip
    report.finish(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
