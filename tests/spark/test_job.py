"""The whole job on real Kafka, real Spark and real PostgreSQL: synthetic events (tests/events.py)
through the typed topic, compared with values computed here with plain Python from their raw
JSON (tests/spark/helpers.golden). tests/recorded/test_spark_recorded.py does the same over real
recordings."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from app.config import Settings, load_settings
from app.config.names import spark_checkpoint
from app.contract import ChangeType, RecentChange, UserKind
from infra.spark_job import submit_command
from spark import QUERY_NAME
from spark.job import run
from spark.session import driver_environment
from tests.events import synthetic
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import (
    WIKI_COUNTERS,
    batches,
    golden,
    golden_pages,
    page_activity,
    produce,
    query,
    snapshot,
    submit_and_kill,
    typed_events,
    user_edit_counts,
    wiki_activity,
)

pytestmark = pytest.mark.integration

RECEIVED = datetime(2026, 6, 21, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
#: Current-envelope events of a fixed past afternoon, 4 a second: ~100 s over three windows.
CURRENT_START = datetime(2026, 6, 20, 15, 0, tzinfo=UTC)
#: Legacy-envelope events (``meta.schema_uri``) of a fixed day in 2018, 10 a second.
LEGACY_START = datetime(2018, 3, 7, 16, 0, tzinfo=UTC)


def current_events() -> tuple[bytes, ...]:
    """400 events of every type and editor kind in the current envelope, all ids distinct (as
    the worker writes the typed topic: deduplicated, without canaries)."""
    return tuple(synthetic(400, seed=384, start=CURRENT_START, rate=4.0))


def legacy_events() -> tuple[bytes, ...]:
    """2000 events, every one in a legacy envelope (null rc ids on log events, nulls for absent
    lengths and revisions, ``meta.dt`` ending in +00:00)."""
    return tuple(synthetic(2000, seed=2018, start=LEGACY_START, rate=10.0, legacy_share=1.0))


def assert_golden(settings: Settings, raw_lines: tuple[bytes, ...]) -> None:
    window = settings.spark.windowing.duration
    expected_users, expected_wikis = golden(raw_lines, window=window)
    assert user_edit_counts(settings) == expected_users
    assert wiki_activity(settings) == expected_wikis
    assert page_activity(settings) == golden_pages(raw_lines, window=window)


def assert_every_counter_is_exercised(raw_lines: tuple[bytes, ...]) -> None:
    """The events give every counter something to count over more than one window, so a
    golden comparison cannot pass on zeros."""
    users, wikis = golden(raw_lines)
    assert len({start for start, _ in wikis}) >= 3 and len(users) > 100
    for index, counter in enumerate(WIKI_COUNTERS):
        assert sum(row[1 + index] for row in wikis.values()) > 0, counter
    # Pages edited by several editors (bots among them) in one window, and created in one.
    pages = golden_pages(raw_lines).values()
    assert any(editors > 1 for _, _, _, editors, *_ in pages)
    assert any(row[8] for row in pages) and any(row[10] for row in pages)


def aborted_copies(events: list[RecentChange], count: int) -> list[RecentChange]:
    """Events in a transaction the producer aborts: a read_committed job never counts them."""
    return [
        event.model_copy(update={"event_id": f"aborted-{event.event_id}"})
        for event in events[:count]
    ]


def checkpoint_dir(settings: Settings) -> Path:
    return Path(spark_checkpoint(settings))


def test_golden_current_events_and_a_replayed_batch(
    spark: SparkSession, job_settings: JobSettings
) -> None:
    settings = job_settings()
    raw = current_events()
    assert_every_counter_is_exercised(raw)
    events = typed_events(raw, received_at=RECEIVED)
    produce(settings, events, aborted=aborted_copies(events, 50))
    run(spark, settings, available_now=True, retention=False)

    assert_golden(settings, raw)
    data_batch = batches(settings)[0]
    assert data_batch["query_name"] == QUERY_NAME and data_batch["batch_id"] == 0
    assert data_batch["input_rows"] == len(events)
    assert data_batch["rows_written"] == (
        len(user_edit_counts(settings))
        + len(wiki_activity(settings))
        + len(page_activity(settings))
    )
    assert data_batch["max_event_time"] == max(e.event_time for e in events)
    assert data_batch["rows_dropped_by_watermark"] == 0

    # Spark runs a batch again when it crashed after the sink but before its commit log entry:
    # remove everything after batch 0 was planned, as such a crash leaves the checkpoint.
    tables = ("user_edit_counts", "wiki_activity", "page_activity", "page_activity_hourly")
    before = {table: snapshot(settings, table) for table in tables}
    checkpoint = checkpoint_dir(settings)
    for log_dir in ("offsets", "commits"):
        for entry in (checkpoint / log_dir).iterdir():
            if log_dir == "commits" or entry.name != "0":
                entry.unlink()
    run(spark, settings, available_now=True, retention=False)
    replayed = batches(settings)[0]
    assert replayed["committed_at"] > data_batch["committed_at"], "batch 0 ran again"
    assert replayed["input_rows"] == len(events)
    assert {table: snapshot(settings, table) for table in tables} == before  # even updated_at


def test_golden_legacy_batch_and_rebuild(spark: SparkSession, job_settings: JobSettings) -> None:
    settings = job_settings()
    raw = legacy_events()
    assert all(b'"schema_uri"' in line and b'"$schema"' not in line for line in raw)
    assert_every_counter_is_exercised(raw)
    produce(settings, typed_events(raw, received_at=RECEIVED), per_transaction=500)
    run(spark, settings, available_now=True, retention=False)
    assert_golden(settings, raw)

    # Damage the aggregates, then rebuild them from the topic: a fresh checkpoint, earliest.
    query(settings, "UPDATE wiki_activity SET events = events + 1, bytes_added = 0")
    query(settings, "DELETE FROM user_edit_counts WHERE user_name < 'M'")
    run(
        spark, settings, available_now=True, retention=False
    )  # from the checkpoint: nothing new to do
    assert wiki_activity(settings) != golden(raw)[1]
    run(spark, settings, available_now=True, rebuild=True, retention=False)
    assert_golden(settings, raw)
    rebuilt = batches(settings)  # the new checkpoint's batches only
    assert [b["batch_id"] for b in rebuilt] == list(range(len(rebuilt)))
    assert rebuilt[0]["input_rows"] == len(raw)


def late_test_event(
    at: datetime, *, type: ChangeType = ChangeType.EDIT, user: str = "Alice"
) -> RecentChange:
    return RecentChange(
        source_schema="/mediawiki/recentchange/1.0.0",
        event_id=f"{type}-{user}-{at.isoformat()}",
        event_time=at,
        emitted_at=at,
        wiki="enwiki",
        server_name="en.wikipedia.org",
        type=type,
        namespace=0,
        title="Late",
        user=user,
        user_kind=UserKind.REGISTERED,
        bot=False,
        length_old=10 if type is ChangeType.EDIT else None,
        length_new=20 if type is ChangeType.EDIT else None,
        length_delta=10 if type is ChangeType.EDIT else None,
    )


def test_an_event_older_than_the_watermark_is_dropped_and_reported(
    spark: SparkSession, job_settings: JobSettings
) -> None:
    settings = job_settings()  # window 1 minute, watermark 2 minutes
    noon = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)
    produce(
        settings,
        [
            late_test_event(noon + timedelta(seconds=10)),
            late_test_event(noon + timedelta(minutes=5, seconds=10)),
        ],
    )
    run(spark, settings, available_now=True, retention=False)  # watermark now 12:03:10
    late = [
        late_test_event(noon + timedelta(minutes=1, seconds=30)),  # window ends 12:02: late
        late_test_event(noon + timedelta(minutes=1, seconds=31), type=ChangeType.LOG),  # late
        late_test_event(noon + timedelta(minutes=3, seconds=5), user="Bob"),  # ends 12:04: counted
    ]
    produce(settings, late)
    run(spark, settings, available_now=True, retention=False)

    assert sorted(
        (start.minute, user, count)
        for (start, user), (_, count) in user_edit_counts(settings).items()
    ) == [
        (0, "Alice", 1),
        (3, "Bob", 1),
        (5, "Alice", 1),
    ]
    assert sorted(
        (start.minute, row[-1]) for (start, _), row in wiki_activity(settings).items()
    ) == [
        (0, 1),
        (3, 1),
        (5, 1),
    ]
    late_batch = next(b for b in batches(settings) if b["input_rows"] == len(late))
    assert sorted((start.minute, title) for start, _, _, title in page_activity(settings)) == [
        (0, "Late"),
        (3, "Late"),
        (5, "Late"),
    ]
    # Spark counts the aggregation's late input after its partial (per Kafka partition)
    # aggregation: the late edit and log event (same page, so same partition) make one
    # (window, enwiki) row, and the edit one (window, Alice) row and one (window, page) row.
    assert late_batch["rows_dropped_by_watermark"] == 3
    assert late_batch["watermark"] == noon + timedelta(minutes=3, seconds=10)
    assert late_batch["max_event_time"] == noon + timedelta(minutes=3, seconds=5)
    assert late_batch["rows_written"] == 3  # Bob's minute: his row, the wiki's, the page's


def test_sigkill_mid_stream_then_restart_from_the_checkpoint(
    spark: SparkSession,
    job_settings: JobSettings,
    subprocess_env: dict[str, str],
    tmp_path: Path,
) -> None:
    overrides = {
        "SPARK_TRIGGER_PROCESSING_TIME": "1 second",
        "SPARK_MAX_OFFSETS_PER_TRIGGER": "60",  # several batches: one is under way at the kill
        "SPARK_MASTER": "local[2]",
    }
    settings = job_settings(**overrides)
    raw = current_events()
    produce(settings, typed_events(raw, received_at=RECEIVED))
    text = submit_and_kill(
        settings, subprocess_env, tmp_path / "job.log", after="Batch 0: wrote", overrides=overrides
    )
    assert "Batch 0: wrote " in text and " (late rows dropped: 0)" in text
    checkpoint = checkpoint_dir(settings)
    planned = {p.name for p in (checkpoint / "offsets").iterdir() if p.name.isdigit()}
    committed = {p.name for p in (checkpoint / "commits").iterdir() if p.name.isdigit()}
    assert committed, "batch 0 was committed before the kill"
    assert user_edit_counts(settings) != golden(raw)[0], "the kill came before the end"
    print(f"at the kill: batches planned {sorted(planned)}, committed {sorted(committed)}")

    run(spark, settings, available_now=True, retention=False)  # the restart, from the checkpoint
    assert_golden(settings, raw)
    ids = [b["batch_id"] for b in batches(settings)]
    assert ids == list(range(len(ids)))
    assert sum(b["input_rows"] or 0 for b in batches(settings)) >= len(raw)


def test_a_bad_configuration_stops_the_job_with_a_message(
    subprocess_env: dict[str, str],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spark.job", "--available-now"],
        env={**subprocess_env, "SPARK_WINDOWING_DURATION": "5 mintues"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "spark: invalid configuration" in result.stderr
    assert "spark.windowing.duration = '5 mintues'" in result.stderr


def test_submit_command_carries_the_configuration(job_settings: JobSettings) -> None:
    settings = job_settings(
        SPARK_MASTER="spark://cluster:7077", SPARK_DRIVER_MEMORY="2g", SPARK_SHUFFLE_PARTITIONS="5"
    )
    command, env = submit_command(settings, "--available-now")
    assert Path(command[0]).name == "spark-submit"
    assert command[command.index("--master") + 1] == "spark://cluster:7077"
    assert command[command.index("--driver-memory") + 1] == "2g"
    jars = command[command.index("--jars") + 1].split(",")
    assert any("spark-sql-kafka-0-10" in jar for jar in jars) and all(
        os.path.isabs(j) for j in jars
    )
    confs = [value for flag, value in itertools.pairwise(command) if flag == "--conf"]
    assert "spark.sql.shuffle.partitions=5" in confs, confs
    assert command[-2:] == [str(ROOT / "spark" / "job.py"), "--available-now"]
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert shutil.which(command[0]) or Path(command[0]).exists()


@pytest.mark.parametrize(
    ("environ", "address"),
    [
        ({}, "127.0.0.1"),  # a local master: loopback, like every component
        ({"SPARK_LOCAL_IP": "10.0.0.5"}, "10.0.0.5"),
        ({"SPARK_MASTER": "spark://cluster:7077"}, None),  # Spark's own choice
        ({"SPARK_MASTER": "spark://cluster:7077", "SPARK_LOCAL_IP": "10.0.0.5"}, "10.0.0.5"),
    ],
)
def test_the_driver_address_is_the_configuration_key_spark_local_ip(
    environ: dict[str, str], address: str | None
) -> None:
    settings = load_settings(environ={"WIKIPULSE_ENV_FILE": "/nonexistent", **environ})
    assert settings.spark.local_ip == environ.get("SPARK_LOCAL_IP", "")
    assert driver_environment(settings).get("SPARK_LOCAL_IP") == address
    _, env = submit_command(settings)  # what `up` and Compose run
    assert env.get("SPARK_LOCAL_IP") == address


def test_the_job_applies_the_retention_and_stops_when_asked(
    spark: SparkSession, job_settings: JobSettings
) -> None:
    settings = job_settings(SPARK_TRIGGER_PROCESSING_TIME="1 second")
    now = datetime.now(UTC)
    old = (now - timedelta(days=40)).replace(second=0, microsecond=0)
    # The retention counts back from the table's newest window: one ten minutes old is there
    # before the job starts, so its first round deletes "Ancient" and keeps "Kept".
    kept = (now - timedelta(minutes=10)).replace(second=0, microsecond=0)
    for start, user in ((old, "Ancient"), (kept, "Kept")):
        query(
            settings,
            "INSERT INTO user_edit_counts (window_start, window_end, user_name, edit_count) "
            "VALUES (%s, %s, %s, 1)",
            (start, start + timedelta(minutes=1), user),
        )
    produce(settings, [late_test_event(now - timedelta(seconds=5), user="Recent")])
    stop = threading.Event()
    runner = threading.Thread(target=run, args=(spark, settings), kwargs={"stop": stop})
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not any(b["input_rows"] for b in batches(settings)):
            assert runner.is_alive() and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert not spark.streams.active
    assert sorted(user for (_, user) in user_edit_counts(settings)) == ["Kept", "Recent"]
