"""A replay of history keeps its aggregates: the job over synthetic events from two years ago,
SIGKILLed mid-stream and restarted, with the retention (``postgres.retention_days`` = 30) run
by the CLI, by the restarted job and by hand, loses no row. Retention counts from the newest
window in each table, not from the wall clock.

The expected tables are computed in plain Python from the raw events (tests/spark/helpers.golden,
and the rollups summed here from those)."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from app.config import Settings
from spark.job import run
from spark.retention import delete_expired
from tests.events import synthetic
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import (
    WIKI_COUNTERS,
    batches,
    golden,
    produce,
    query,
    snapshot,
    submit_and_kill,
    typed_events,
    user_edit_counts,
    wiki_activity,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: 1200 events at 2 per second: 10 minutes of event time, 20 batches of 60.
COUNT, RATE = 1200, 2.0
BATCH_OFFSETS = "60"
TABLES = ("user_edit_counts", "wiki_activity", "page_activity", "page_activity_hourly")
GRAINS = {"minute": ("second",), "hour": ("minute", "second"), "day": ("hour", "minute", "second")}

Row = tuple[Any, ...]


def bucket(start: datetime, grain: str) -> datetime:
    """The UTC bucket of ``grain`` a window starting at ``start`` belongs to."""
    return start.replace(microsecond=0, **dict.fromkeys(GRAINS[grain], 0))


def golden_rollups(
    users: dict[tuple[datetime, str], tuple[datetime, int]],
    wikis: dict[tuple[datetime, str], tuple[Any, ...]],
) -> dict[str, list[Row]]:
    """activity_totals and user_edit_rollup, summed from the golden base tables."""
    totals: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0] * len(WIKI_COUNTERS))
    for (start, _), (_, *counters) in wikis.items():
        for grain in ("minute", "hour", "day"):
            sums = totals[(grain, bucket(start, grain))]
            sums[:] = [a + b for a, b in zip(sums, counters, strict=True)]
    per_user: dict[tuple[str, datetime, str], int] = defaultdict(int)
    for (start, user), (_, count) in users.items():
        for grain in ("hour", "day"):
            per_user[(grain, bucket(start, grain), user)] += count
    return {
        "activity_totals": sorted((*key, *sums) for key, sums in totals.items()),
        "user_edit_rollup": sorted((*key, edits) for key, edits in per_user.items()),
    }


def rollups(settings: Settings) -> dict[str, list[Row]]:
    return {
        "activity_totals": query(
            settings,
            f"SELECT grain, bucket, {', '.join(WIKI_COUNTERS)} FROM activity_totals ORDER BY 1, 2",
        ),
        "user_edit_rollup": query(
            settings,
            "SELECT grain, bucket, user_name, edits FROM user_edit_rollup ORDER BY 1, 2, 3",
        ),
    }


def test_a_replay_two_years_old_survives_a_sigkill_restart_and_the_retention(
    spark: SparkSession,
    job_settings: JobSettings,
    subprocess_env: dict[str, str],
    tmp_path: Path,
) -> None:
    overrides = {
        "SPARK_TRIGGER_PROCESSING_TIME": "1 second",
        "SPARK_MAX_OFFSETS_PER_TRIGGER": BATCH_OFFSETS,  # many batches: the kill lands mid-way
        "SPARK_MASTER": "local[2]",
    }
    settings = job_settings(**overrides)
    assert settings.postgres.retention_days == 30  # the default: far less than two years
    two_years_ago = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=730)
    raw = synthetic(COUNT, seed=23, start=two_years_ago, rate=RATE)
    produce(settings, typed_events(raw, received_at=datetime.now(UTC)))
    expected_users, expected_wikis = golden(raw, window=settings.spark.windowing.duration)
    newest = max(start for start, _ in expected_wikis)
    assert timedelta(days=729) < datetime.now(UTC) - newest < timedelta(days=731)

    # The job as `up` runs it (spark-submit, its retention thread on), SIGKILLed mid-replay.
    submit_and_kill(
        settings, subprocess_env, tmp_path / "job.log", after="Batch 1: wrote", overrides=overrides
    )  # two batches of minutes are in the tables
    at_kill = {table: snapshot(settings, table) for table in TABLES}
    users_at_kill = user_edit_counts(settings)
    assert users_at_kill and wiki_activity(settings), "batches 0 and 1 wrote rows"
    assert users_at_kill != expected_users, "the kill came before the end"
    assert set(users_at_kill) <= set(expected_users)
    assert set(wiki_activity(settings)) <= set(expected_wikis)

    # The retention once, as cron runs it: every minute written before the kill stays.
    retention = subprocess.run(
        [sys.executable, "-m", "spark.retention"],
        env={**subprocess_env, "POSTGRES_DATABASE": settings.postgres.database},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert retention.returncode == 0, retention.stderr
    assert (
        "user_edit_counts: 0, wiki_activity: 0, page_activity: 0, page_activity_hourly: 0, "
        "pipeline_batches: 0" in retention.stderr
    )
    assert {table: snapshot(settings, table) for table in TABLES} == at_kill  # even xmin

    # The restart from the checkpoint, its retention thread on (run's default).
    run(spark, settings, available_now=True)
    assert user_edit_counts(settings) == expected_users
    assert wiki_activity(settings) == expected_wikis
    assert rollups(settings) == golden_rollups(expected_users, expected_wikis)
    ids = [b["batch_id"] for b in batches(settings)]
    assert ids == list(range(len(ids)))
    assert all(not b["rows_dropped_by_watermark"] for b in batches(settings))

    # And once more by hand: two-year-old history is the newest there is, so it all stays.
    before = {table: snapshot(settings, table) for table in TABLES}
    assert delete_expired(settings.postgres) == {
        "user_edit_counts": 0,
        "wiki_activity": 0,
        "pipeline_batches": 0,
        "page_activity": 0,
        "page_activity_hourly": 0,
        "alerts": 0,
    }
    assert {table: snapshot(settings, table) for table in TABLES} == before
