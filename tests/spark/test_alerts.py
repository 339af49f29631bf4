"""The job's alert step (spark/alerts.py) on real Kafka, Spark and PostgreSQL: edits written by
hand, minute by minute, through the typed topic and the job; the alerts, their notifications and
deliveries as PostgreSQL holds them. Expected values worked out by hand in the comments."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pyspark.sql import SparkSession

from app.config import Settings
from spark.job import run
from tests.app.examples import current_edit, encoded
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import produce, query, submit_and_kill, typed_events

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
START = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)
HOOK = "http://127.0.0.1:9/wikipulse-alerts"
_ids = itertools.count(1)

ALERTS = (
    "SELECT kind, wiki, namespace, title, window_start, window_end, detected_window_end, "
    "observed, expected, closed_at IS NOT NULL FROM alerts ORDER BY id"
)
NOTIFICATIONS = (
    "SELECT a.kind, coalesce(a.title, a.wiki), n.event, d.url, d.attempts, d.delivered_at "
    "FROM alert_notifications AS n JOIN alerts AS a ON a.id = n.alert_id "
    "LEFT JOIN alert_deliveries AS d ON d.notification_id = n.id ORDER BY n.id"
)


def minute(n: int) -> datetime:
    return START + n * MINUTE


def edit(at: datetime, wiki: str, title: str, user: str, *, bot: bool = False) -> bytes:
    """One edit, in the current schema's shape (tests/app/examples.py), of ``title`` on
    ``wiki`` (a Dutch or Frisian Wikipedia) by ``user`` at ``at``."""
    event: dict[str, Any] = current_edit()
    server = {"nlwiki": "nl.wikipedia.org", "fywiki": "fy.wikipedia.org"}[wiki]
    event["meta"].update(
        id=str(uuid.UUID(int=next(_ids))), dt=at.isoformat().replace("+00:00", "Z"),
        domain=server, uri=f"https://{server}/wiki/{title}",
    )  # fmt: skip
    event.update(
        wiki=wiki, server_name=server, server_url=f"https://{server}", namespace=0, title=title,
        title_url=f"https://{server}/wiki/{title}", user=user, bot=bot,
        timestamp=int(at.timestamp()),
    )  # fmt: skip
    return encoded(event)


def per_minute(first: int, last: int, count: int) -> list[bytes]:
    """``count`` edits of nlwiki in each of minutes ``first`` … ``last``, spread over it."""
    return [
        # each edit on a page of its own: nlwiki surges, none of its pages trends
        edit(minute(n) + timedelta(seconds=60 * i / count), "nlwiki", f"Lemma {n}.{i}",
             f"Redacteur {i % 5}")
        for n in range(first, last + 1)
        for i in range(count)
    ]  # fmt: skip


def first_run_events() -> list[bytes]:
    events = [
        # nlwiki: 20 edits a minute, but 100 in minutes 45, 46 and 47.
        *per_minute(0, 44, 20),
        *per_minute(45, 47, 100),
        *per_minute(48, 74, 20),
        # fywiki's "Tulp": one edit, an hour of silence, then 6 edits by 4 people.
        edit(minute(1), "fywiki", "Tulp", "Anke"),
        *(edit(minute(m) + timedelta(seconds=s), "fywiki", "Tulp", name)
          for m, s, name in ((62, 5, "Anke"), (62, 40, "Bauke"), (63, 10, "Climmy"),
                             (64, 3, "Durk"), (64, 30, "Anke"), (65, 20, "Bauke"))),
        # fywiki's "Geit": 4 edits by 4 people, no past: score 4 × 5 = 20, but 4 edits where
        # 0.1 are expected happen by chance 3.8e-6 of the time (> 1e-6): no alert.
        *(edit(minute(66) + timedelta(seconds=10 * i), "fywiki", "Geit", name)
          for i, name in enumerate(("Anke", "Bauke", "Climmy", "Durk"))),
        # fywiki's "Mole": 20 edits by four bots in three minutes.
        *(edit(minute(62 + i % 3) + timedelta(seconds=i), "fywiki", "Mole", f"Bot {i % 4}",
               bot=True) for i in range(20)),
    ]  # fmt: skip
    return in_time_order(events)


def in_time_order(events: list[bytes]) -> list[bytes]:
    """As a live stream brings them (a replay in batches drops what comes minutes late)."""
    return sorted(events, key=lambda event: orjson.loads(event)["meta"]["dt"])


#: After the first run's events: nlwiki's surge, opened by minute 45, closed at minute 48.
SURGE = ("wiki_surge", "nlwiki", None, None, minute(45), minute(48), minute(46), 100.0, 20.0,
         True)  # fmt: skip
#: Tulp's past: 1 edit, in the 50 minutes page_activity covers before the horizon [50, 65) (it
#: begins at minute 0). At the end of minute 64: 5 edits by 4 people, expected 1 × 15 / 50;
#: 4 × 6 / 1.3 = 18.5 < 20. At the end of minute 65: 6 edits, 4 × 7 / 1.3 = 21.5: opened, from
#: its first edit in the horizon (minute 62). At the end of minute 71: expected 1 × 15 / 57, its
#: 6 edits: still trending.
TULP = ("page_trending", "fywiki", 0, "Tulp", minute(62), minute(72), minute(66), 6.0,
        pytest.approx(15 / 57), False)  # fmt: skip
#: Six minutes later: at the end of minute 76 (horizon [62, 77)) as before, expected 1 × 15 / 62;
#: at the end of minute 77 the 2 edits of minute 62 are in its past: 4 edits, expected
#: 3 × 15 / 63, growth (4 + 1) / 1.71 < 3 (min_growth): closed, as it was at minute 76.
TULP_LATER = (*TULP[:5], minute(77), minute(66), 6.0, pytest.approx(15 / 62), True)


#: These streams last 80 minutes, in 2026: pages may alert once 30 minutes of stream precede the
#: horizon (the default waits 2 hours), and nothing is old enough for the retention.
SHORT_STREAM = {"ALERTS_TRENDING_MIN_HISTORY": "30 minutes", "POSTGRES_RETENTION_DAYS": "100000"}


@pytest.fixture
def settings(job_settings: JobSettings) -> Settings:
    return job_settings(ALERTS_WEBHOOKS_URLS=f'["{HOOK}"]', **SHORT_STREAM)


def write(settings: Settings, events: list[bytes]) -> None:
    produce(settings, typed_events(events, received_at=minute(90)), per_transaction=500)


def test_a_surge_and_a_trending_page_alert_once_across_restarts_and_replays(
    spark: SparkSession, settings: Settings
) -> None:
    write(settings, first_run_events())
    run(spark, settings, available_now=True, retention=False)

    # The newest minute is 74: minutes up to 74 - 1 (window) - 2 (watermark) = 71 are closed;
    # the first step starts 60 minutes (the baseline) before: at minute 11.
    assert query(settings, "SELECT evaluated_through FROM alert_progress") == [(minute(71),)]
    assert query(settings, ALERTS) == [SURGE, TULP]
    notifications = [
        ("wiki_surge", "nlwiki", "opened", HOOK, 0, None),
        ("wiki_surge", "nlwiki", "closed", HOOK, 0, None),
        ("page_trending", "Tulp", "opened", HOOK, 0, None),
    ]
    assert query(settings, NOTIFICATIONS) == notifications
    ids = query(settings, "SELECT id FROM alerts ORDER BY id")

    # A restart with six more steady minutes: the open episode goes on, then closes; nothing
    # new opens.
    write(settings, per_minute(75, 80, 20))
    run(spark, settings, available_now=True, retention=False)
    assert query(settings, "SELECT evaluated_through FROM alert_progress") == [(minute(77),)]
    assert query(settings, ALERTS) == [SURGE, TULP_LATER]
    assert query(settings, "SELECT id FROM alerts ORDER BY id") == ids
    notifications.append(("page_trending", "Tulp", "closed", HOOK, 0, None))
    assert query(settings, NOTIFICATIONS) == notifications

    # The aggregates rebuilt from the topic: every minute evaluated already, nothing new.
    run(spark, settings, available_now=True, rebuild=True, retention=False)
    assert query(settings, ALERTS) == [SURGE, TULP_LATER]
    assert query(settings, NOTIFICATIONS) == notifications


def test_a_replay_in_small_batches_finds_the_same_episodes(
    spark: SparkSession, job_settings: JobSettings
) -> None:
    """The same events into a new database, 400 records a batch: the step runs after each
    batch, from the stream's first minute on, and finds the same episodes, minute for minute
    (so a webhook receives the same idempotency keys)."""
    settings = job_settings(SPARK_MAX_OFFSETS_PER_TRIGGER="400", **SHORT_STREAM)
    write(settings, [*first_run_events(), *per_minute(75, 80, 20)])
    run(spark, settings, available_now=True, retention=False)
    assert query(settings, "SELECT count(*) > 4 FROM pipeline_batches") == [(True,)]
    assert query(settings, ALERTS) == [SURGE, TULP_LATER]


def test_a_page_on_a_surging_wiki_alerts_only_beyond_the_wikis_pace(
    spark: SparkSession, settings: Settings
) -> None:
    """nlwiki at 5× its rate for minutes 62 to 66. "Storm" gets one edit a minute from five
    people meanwhile; "Dijk" gets 12 from five people.

    At the end of minute 66 (horizon [52, 67)), nlwiki's people made 10 × 20 + 5 × 100 + Dijk's
    12 = 712 edits besides Storm's own, where its median minute predicts 15 × 20 = 300: a pace
    of 2.37. Storm, with no past: 5 edits where 0.1 × 2.37 are expected happen by chance 5.1e-6
    of the time (> 1e-6): no alert, though at its wiki's usual pace (7.7e-8) it would have one;
    earlier, fewer edits at a pace above 2, and later its horizon holds the whole surge. Dijk,
    at the end of minute 63 (horizon [49, 64)): 5 edits by 5 people (score 30) where nlwiki's
    others made 13 × 20 + 2 × 100 + Storm's 2 = 462, a pace of 1.54: 0.154 expected, 6.3e-7:
    an alert, from its first minute."""
    storm = [edit(minute(62 + n) + timedelta(seconds=30), "nlwiki", "Storm", f"Schipper {n}")
             for n in range(5)]  # fmt: skip
    dijk = [edit(minute(62) + timedelta(seconds=25 * n), "nlwiki", "Dijk", f"Boer {n % 5}")
            for n in range(12)]  # fmt: skip
    steady = [*per_minute(0, 61, 20), *per_minute(62, 66, 100), *per_minute(67, 80, 20)]
    write(settings, in_time_order([*steady, *storm, *dijk]))
    run(spark, settings, available_now=True, retention=False)

    assert query(settings, "SELECT evaluated_through FROM alert_progress") == [(minute(77),)]
    assert query(settings, "SELECT kind, wiki, title, window_start FROM alerts ORDER BY id") == [
        ("wiki_surge", "nlwiki", None, minute(62)),
        ("page_trending", "nlwiki", "Dijk", minute(62)),
    ]


def test_sigkill_mid_episode_then_a_restart_alerts_once(
    spark: SparkSession, job_settings: JobSettings, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """spark-submit, 100 records a batch, SIGKILLed as soon as its log says the surge opened
    (before or after that step's commit); the restart from the checkpoint goes on to close it:
    one episode, one `opened` and one `closed` notification."""
    overrides = {
        "ALERTS_WEBHOOKS_URLS": f'["{HOOK}"]',
        "POSTGRES_RETENTION_DAYS": "100000",
        "SPARK_TRIGGER_PROCESSING_TIME": "1 second",
        "SPARK_MAX_OFFSETS_PER_TRIGGER": "100",
        "SPARK_MASTER": "local[2]",
    }
    settings = job_settings(**overrides)
    # A six-minute surge: batches of 100 records are about a minute of it each, so the step
    # that opens it comes before the one that closes it.
    write(settings, [*per_minute(0, 44, 20), *per_minute(45, 50, 100), *per_minute(51, 63, 20)])
    text = submit_and_kill(settings, subprocess_env, tmp_path / "job.log",
                           after="alerts: evaluated", overrides=overrides)  # fmt: skip
    assert "1 opened, 0 closed" in text
    assert query(settings, "SELECT count(*) FROM alerts WHERE closed_at IS NOT NULL") == [(0,)]

    run(spark, settings, available_now=True, retention=False)
    assert query(settings, ALERTS) == [(*SURGE[:5], minute(51), *SURGE[6:])]
    assert query(settings, NOTIFICATIONS) == [
        ("wiki_surge", "nlwiki", "opened", HOOK, 0, None),
        ("wiki_surge", "nlwiki", "closed", HOOK, 0, None),
    ]
