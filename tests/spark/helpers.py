"""Helpers of the Spark tests: typed topics, scratch databases, golden values, table snapshots,
the typed topic's round trip through Spark's JSON reader.

The golden values are computed here from the events' raw JSON lines (synthetic, hand-written or
recorded) with plain Python (json, datetime, ipaddress): not with app.normalize, not with Spark,
not with the job's code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import TimestampType

from app.config import Settings
from app.config.clients import libpq_params
from app.contract import TYPED_HEADERS, WIKI_ACTIVITY_COUNTERS, RecentChange
from app.normalize import normalize
from app.normalize.batch import encode_typed
from infra.spark_job import submit_command
from spark.schema import EVENT_SCHEMA
from spark.transforms import parse_events

TYPED_PARTITIONS = 3

# ---- Kafka -----------------------------------------------------------------------------------


def typed_events(raw_lines: Iterable[bytes], *, received_at: datetime) -> list[RecentChange]:
    events = []
    for raw in raw_lines:
        event = normalize(raw, received_at=received_at)
        assert isinstance(event, RecentChange), raw[:200]
        events.append(event)
    return events


async def _produce(
    bootstrap: str,
    topic: str,
    events: Sequence[RecentChange],
    *,
    per_transaction: int,
    aborted: Sequence[RecentChange],
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, TYPED_PARTITIONS, 1)])
    finally:
        await admin.close()
    # Like the worker: transactions (the job reads with isolation.level=read_committed).
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"spark-test-{uuid.uuid4().hex[:8]}",
        enable_idempotence=True,
        acks="all",
    )
    await producer.start()
    try:
        for start in range(0, len(events), per_transaction):
            async with producer.transaction():
                for event in events[start : start + per_transaction]:
                    await producer.send(
                        topic,
                        encode_typed(event),
                        key=event.kafka_key(),
                        headers=list(TYPED_HEADERS),
                    )
            if start == 0 and aborted:
                await producer.begin_transaction()
                for event in aborted:
                    await producer.send(
                        topic,
                        encode_typed(event),
                        key=event.kafka_key(),
                        headers=list(TYPED_HEADERS),
                    )
                await producer.abort_transaction()
    finally:
        await producer.stop()


def produce(
    settings: Settings,
    events: Sequence[RecentChange],
    *,
    per_transaction: int = 100,
    aborted: Sequence[RecentChange] = (),
) -> None:
    """Write events to the settings' typed topic (created with 3 partitions if missing), in
    committed transactions; ``aborted`` events go in one aborted transaction among them."""
    asyncio.run(
        _produce(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics.typed.name,
            events,
            per_transaction=per_transaction,
            aborted=aborted,
        )
    )


# ---- Spark's JSON reader --------------------------------------------------------------------


def _as_plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1_000_000)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def _sort_key(row: dict[str, Any]) -> str:
    """A total order on rows (ids may repeat in a recording), to compare them as multisets."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def assert_survives_the_typed_topic(spark: SparkSession, events: Sequence[RecentChange]) -> None:
    """Every event, as the worker encodes it, parses back into the schema's columns with the
    contract's values (timestamps to the microsecond)."""
    records = spark.createDataFrame([(encode_typed(e),) for e in events], "value binary")
    timestamps = [f.name for f in EVENT_SCHEMA.fields if f.dataType == TimestampType()]
    # Timestamps as epoch microseconds: collected TimestampType values are naive local times.
    parsed = parse_events(records).select(
        *(
            F.unix_micros(F.col(name)).alias(name) if name in timestamps else F.col(name)
            for name in EVENT_SCHEMA.fieldNames()
        )
    )
    rows = sorted((row.asDict() for row in parsed.collect()), key=_sort_key)
    expected = sorted(
        ({name: _as_plain(value) for name, value in e.model_dump().items()} for e in events),
        key=_sort_key,
    )
    assert len(rows) == len(events)
    assert rows == expected


# ---- PostgreSQL ------------------------------------------------------------------------------


def query(settings: Settings, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg2.connect(**libpq_params(settings.postgres)) as connection:
        cursor = connection.cursor()
        cursor.execute(statement, params)
        rows = cursor.fetchall() if cursor.description else []
    connection.close()
    return rows


def user_edit_counts(settings: Settings) -> dict[tuple[datetime, str], tuple[datetime, int]]:
    return {
        (start, user): (end, count)
        for start, end, user, count in query(
            settings, "SELECT window_start, window_end, user_name, edit_count FROM user_edit_counts"
        )
    }


WIKI_COUNTERS = WIKI_ACTIVITY_COUNTERS


def wiki_activity(settings: Settings) -> dict[tuple[datetime, str], tuple[Any, ...]]:
    return {
        (row[0], row[2]): (row[1], *row[3:])
        for row in query(
            settings,
            f"SELECT window_start, window_end, wiki, {', '.join(WIKI_COUNTERS)} FROM wiki_activity",
        )
    }


#: page_activity's columns after its key (window_start, wiki, namespace, title).
PAGE_COLUMNS = (
    "window_end",
    "server_name",
    "edits",
    "editors",
    "bot_edits",
    "anonymous_edits",
    "bytes_added",
    "bytes_removed",
    "new_page",
    "editor_names",
    "bot_names",
)


def page_activity(settings: Settings) -> dict[tuple[datetime, str, int, str], tuple[Any, ...]]:
    return {
        tuple(row[:4]): tuple(row[4:])
        for row in query(
            settings,
            "SELECT window_start, wiki, namespace, title, "
            f"{', '.join(PAGE_COLUMNS)} FROM page_activity",
        )
    }


def snapshot(settings: Settings, table: str) -> list[tuple[Any, ...]]:
    """Every column of every row, plus xmin (changes whenever PostgreSQL rewrites a row), in
    the order of the columns after xmin."""
    return sorted(query(settings, f"SELECT xmin::text, * FROM {table}"), key=lambda r: repr(r[1:]))


def batches(settings: Settings) -> list[dict[str, Any]]:
    with psycopg2.connect(**libpq_params(settings.postgres)) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT * FROM pipeline_batches ORDER BY query_name, batch_id")
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    connection.close()
    return rows


# ---- golden values: plain Python over the raw JSON -------------------------------------------

TEMPORARY_ACCOUNT = re.compile(r"^~\d{4}-")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _changes(raw_lines: Iterable[bytes], window: timedelta) -> Iterator[tuple[Any, int]]:
    """Each counted event of the raw JSON lines (first copies of a ``meta.id``, no canaries),
    with the start of its window (epoch seconds) by its event time (``timestamp``, else
    ``meta.dt``)."""
    seconds = int(window.total_seconds())
    seen: set[str] = set()
    for raw in raw_lines:
        event = json.loads(raw)
        if event["meta"]["id"] in seen or event["meta"].get("domain") == "canary":
            continue
        seen.add(event["meta"]["id"])
        if event.get("timestamp") is not None:
            epoch = int(event["timestamp"])
        else:
            epoch = int(datetime.fromisoformat(event["meta"]["dt"]).timestamp())
        yield event, epoch - epoch % seconds


def _is_anonymous(event: Any) -> bool:
    """An edit by an IP address or a temporary account, never a flagged bot."""
    user = event.get("user")
    named = user is not None and (_is_ip(user) or bool(TEMPORARY_ACCOUNT.match(user)))
    return named and not event["bot"]


def _bytes(event: Any) -> tuple[int, int]:
    """(bytes added, bytes removed) by an edit: its length difference, split by sign."""
    length = event.get("length") or {}
    if length.get("new") is None:
        return 0, 0
    delta = length["new"] - (length.get("old") or 0)
    return max(delta, 0), max(-delta, 0)


def golden(
    raw_lines: Iterable[bytes], *, window: timedelta = timedelta(minutes=1)
) -> tuple[
    dict[tuple[datetime, str], tuple[datetime, int]], dict[tuple[datetime, str], tuple[Any, ...]]
]:
    """(user_edit_counts, wiki_activity) as the tables should hold them, keyed like
    :func:`user_edit_counts` and :func:`wiki_activity`."""
    users: Counter[tuple[int, str]] = Counter()
    wikis: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0] * len(WIKI_COUNTERS))
    for event, start in _changes(raw_lines, window):
        is_edit = event["type"] in ("edit", "new")
        user = event.get("user")
        counters = wikis[(start, event["wiki"])]
        counters[6] += 1
        if not is_edit:
            continue
        if user is not None:
            users[(start, user)] += 1
        counters[0] += 1
        counters[1] += event["type"] == "new"
        counters[2] += bool(event["bot"])
        counters[3] += _is_anonymous(event)
        added, removed = _bytes(event)
        counters[4] += added
        counters[5] += removed

    def bounds(start: int) -> tuple[datetime, datetime]:
        begin = datetime.fromtimestamp(start, UTC)
        return begin, begin + window

    return (
        {(bounds(s)[0], u): (bounds(s)[1], n) for (s, u), n in users.items()},
        {(bounds(s)[0], w): (bounds(s)[1], *c) for (s, w), c in wikis.items()},
    )


def golden_pages(
    raw_lines: Iterable[bytes], *, window: timedelta = timedelta(minutes=1)
) -> dict[tuple[datetime, str, int, str], tuple[Any, ...]]:
    """page_activity as the table should hold it, keyed like :func:`page_activity`: per page and
    window, over its edits."""
    pages: dict[tuple[int, str, int, str], dict[str, Any]] = {}
    for event, start in _changes(raw_lines, window):
        if event["type"] not in ("edit", "new"):
            continue
        key = (start, event["wiki"], event["namespace"], event["title"])
        page = pages.setdefault(
            key,
            {"server": event["server_name"], "edits": 0, "bots": 0, "anonymous": 0, "added": 0,
             "removed": 0, "new": False, "editors": set(), "bot_names": set()},
        )  # fmt: skip
        user, bot = event.get("user"), bool(event["bot"])
        page["edits"] += 1
        page["bots"] += bot
        page["anonymous"] += _is_anonymous(event)
        page["new"] |= event["type"] == "new"
        if user is not None:
            page["editors"].add(user)
            if bot:
                page["bot_names"].add(user)
        added, removed = _bytes(event)
        page["added"] += added
        page["removed"] += removed
    return {
        (datetime.fromtimestamp(start, UTC), wiki, namespace, title): (
            datetime.fromtimestamp(start, UTC) + window, p["server"], p["edits"],
            len(p["editors"]), p["bots"], p["anonymous"], p["added"], p["removed"], p["new"],
            sorted(p["editors"]), sorted(p["bot_names"]),
        )
        for (start, wiki, namespace, title), p in pages.items()
    }  # fmt: skip


# ---- the job as `up` runs it -----------------------------------------------------------------


def submit_and_kill(
    settings: Settings,
    environ: Mapping[str, str],
    log_file: Path,
    *,
    after: str,
    overrides: Mapping[str, str] | None = None,
    timeout: float = 240,
) -> str:
    """Run the job with ``spark-submit`` on ``settings``' topic, database and checkpoint, SIGKILL
    it (its whole process group) once its log shows ``after``; return the log."""
    command, extra_env = submit_command(settings)
    env = {
        **environ,
        **extra_env,
        **(overrides or {}),
        "KAFKA_TOPICS_TYPED_NAME": settings.kafka.topics.typed.name,
        "POSTGRES_DATABASE": settings.postgres.database,
        "SPARK_CHECKPOINT_LOCATION": settings.spark.checkpoint.location,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    root = Path(__file__).resolve().parents[2]
    with log_file.open("wb") as output:
        job = subprocess.Popen(
            command, env=env, cwd=root, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while after not in log_file.read_text(errors="replace"):
            assert job.poll() is None, log_file.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log_file.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
    return log_file.read_text(errors="replace")
