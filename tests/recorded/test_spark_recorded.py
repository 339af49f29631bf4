"""The Spark job over every recording at once: its aggregates equal the golden values computed at
run time from the recordings' raw JSON with plain Python (tests/spark/helpers.golden), and every
recorded event survives the typed topic's trip through Spark's JSON reader."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from app.contract import RecentChange
from app.normalize import Rejected, normalize
from spark import QUERY_NAME
from spark.job import run
from tests.recordings import lines
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import (
    assert_survives_the_typed_topic,
    batches,
    golden,
    golden_pages,
    page_activity,
    produce,
    user_edit_counts,
    wiki_activity,
)

pytestmark = pytest.mark.integration


def worker_output(
    recordings: Sequence[Path], *, deduplicate: bool
) -> tuple[tuple[bytes, ...], list[RecentChange]]:
    """(raw lines, typed events) of what the worker passes on to the typed topic from these
    recordings, in order: changes only (canaries and rejected events stay out of it, the latter
    in the dead-letter topic), with ``deduplicate`` each ``meta.id`` once (its first event)."""
    received = datetime.now(UTC)
    raw_lines: list[bytes] = []
    events: list[RecentChange] = []
    seen: set[str] = set()
    for path in recordings:
        for raw in lines(path):
            try:
                event = normalize(raw, received_at=received)
            except Rejected:
                continue
            if not isinstance(event, RecentChange):
                continue
            if deduplicate and event.event_id in seen:
                continue
            seen.add(event.event_id)
            raw_lines.append(raw)
            events.append(event)
    assert events, f"no change in the recordings {[path.name for path in recordings]}"
    return tuple(raw_lines), events


def test_the_aggregates_of_every_recording_equal_the_golden_values(
    recordings: list[Path], spark: SparkSession, job_settings: JobSettings
) -> None:
    # No cap per trigger: everything in one batch, so the watermark drops nothing, however the
    # recordings' times interleave (their files span years, their events are out of order).
    settings = job_settings(SPARK_MAX_OFFSETS_PER_TRIGGER="0")
    raw, events = worker_output(recordings, deduplicate=True)
    produce(settings, events, per_transaction=500)
    run(spark, settings, available_now=True, retention=False)

    window = settings.spark.windowing.duration
    expected_users, expected_wikis = golden(raw, window=window)
    expected_pages = golden_pages(raw, window=window)
    assert user_edit_counts(settings) == expected_users
    assert wiki_activity(settings) == expected_wikis
    assert page_activity(settings) == expected_pages
    data_batch = batches(settings)[0]
    assert data_batch["query_name"] == QUERY_NAME and data_batch["batch_id"] == 0
    assert data_batch["input_rows"] == len(events)
    assert data_batch["rows_written"] == (
        len(expected_users) + len(expected_wikis) + len(expected_pages)
    )
    assert data_batch["max_event_time"] == max(event.event_time for event in events)
    assert data_batch["rows_dropped_by_watermark"] == 0


def test_every_recorded_event_survives_the_typed_topic(
    recordings: list[Path], spark: SparkSession
) -> None:
    _, events = worker_output(recordings, deduplicate=False)
    assert_survives_the_typed_topic(spark, events)
