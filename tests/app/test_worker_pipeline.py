"""The worker for real: replay server (SSE) -> faust worker -> real Kafka.

Synthetic events (tests/events.py), abrupt connection drops, malformed frames, a SIGKILL
mid-stream: the typed topic must hold each valid event exactly once and every raw record must
have one outcome.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from app.config import Settings, load_settings
from app.contract import HEADER_SCHEMA_VERSION, HEADER_SSE_ID, RecentChange
from infra.processes import free_port
from infra.replay.server import ReplayOptions
from infra.stack import Stack
from infra.topics import ensure_topics
from tests.app.bad_input import corpus
from tests.events import synthetic
from tests.harness import (
    ReplayThread,
    WorkerProcess,
    pipeline_environment,
    read_topic,
    running_worker,
    wait_until,
    worker_health,
    worker_metrics,
)

pytestmark = pytest.mark.integration

MALFORMED_EVERY = 40


def topics(settings: Settings) -> dict[str, list]:
    t = settings.kafka.topics
    return {
        name: asyncio.run(read_topic(settings, topic.name, topic.partitions))
        for name, topic in (("raw", t.raw), ("typed", t.typed), ("dead_letter", t.dead_letter))
    }


def typed_count(settings: Settings) -> int:
    t = settings.kafka.topics.typed
    return len(asyncio.run(read_topic(settings, t.name, t.partitions)))


def test_exactly_once_through_drops_malformed_frames_and_a_sigkill(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    events = synthetic(384)  # all with distinct meta.id, times now, 40 a second
    expected_ids = {orjson.loads(e)["meta"]["id"] for e in events}
    assert len(expected_ids) == len(events)
    end = len(events) + len(events) // (MALFORMED_EVERY - 1)
    malformed = sum(1 for p in range(end) if (p + 1) % MALFORMED_EVERY == 0)
    # 2× the event-time pace (~5 s in all): slow enough for the kill to land mid-stream on a
    # loaded machine.
    options = ReplayOptions(
        speed=2.0, drop_every=37, malformed_every=MALFORMED_EVERY, hold_open=True
    )
    with ReplayThread(events, options) as replay:
        env = pipeline_environment(stack_env, replay.url)
        settings = load_settings(environ=env)
        first = WorkerProcess(env, tmp_path / "worker-1.log")
        first.start()
        try:
            wait_until(
                lambda: typed_count(settings) >= 60, 120, "the first typed events", worker=first
            )
        finally:
            first.kill()  # SIGKILL mid-stream: no flush, no commit, no goodbye
        assert typed_count(settings) < len(events), "the kill came too late to be mid-stream"
        with running_worker(env, tmp_path / "worker-2.log") as second:
            wait_until(
                lambda: typed_count(settings) >= len(events), 120, "all typed events", worker=second
            )
            wait_until(
                lambda: len(topics(settings)["dead_letter"]) >= malformed,
                60,
                "the dead letters",
                worker=second,
            )
        assert replay.server.max_active <= 1, "more than one SSE connection at a time"
        resumed = [last_id for last_id, _ in replay.server.requests if last_id]
        assert resumed, "the worker never resumed with Last-Event-ID"

    records = topics(settings)
    typed_ids = Counter(orjson.loads(r.value)["event_id"] for r in records["typed"])
    missing = expected_ids - set(typed_ids)
    doubled = {event_id: n for event_id, n in typed_ids.items() if n > 1}
    raw_offsets = {
        orjson.loads(r.value)["meta"]["id"]: r.offset
        for r in records["raw"]
        if r.value.startswith(b"{") and r.value.endswith(b"}")
    }
    lost_at = sorted(raw_offsets.get(m, -1) for m in missing)
    assert not missing, f"{len(missing)} events lost; their raw offsets: {lost_at}"
    assert not doubled, f"{len(doubled)} events doubled in the typed topic"
    assert set(typed_ids) == expected_ids
    for record in records["typed"][:5]:
        RecentChange.model_validate_json(record.value)
        assert dict(record.headers)[HEADER_SCHEMA_VERSION] == b"1"
    assert len(records["dead_letter"]) == malformed
    for record in records["dead_letter"]:
        headers = dict(record.headers)
        assert headers["reason-code"] == b"invalid_json"
        assert headers["origin-topic"] == settings.kafka.topics.raw.name.encode()
        raw = records["raw"][int(headers["origin-offset"])]
        assert raw.value == record.value  # the original bytes, verbatim
    # The raw log holds each SSE event once (the resume point is the last durable event).
    raw_ids = Counter(dict(r.headers)[HEADER_SSE_ID] for r in records["raw"])
    assert max(raw_ids.values()) == 1
    assert len(records["raw"]) == len(events) + malformed


def test_outcomes_reconcile_with_duplicates_filters_and_canaries(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    events = synthetic(120, seed=12)
    repeated = events[:10]  # Wikimedia replays and its two datacenters repeat events
    canary = orjson.loads(events[0])
    canary["meta"]["domain"] = "canary"
    canary["meta"]["id"] = "canary-1"
    feed = [*events, *repeated, orjson.dumps(canary)]
    in_namespace_0 = {
        orjson.loads(e)["meta"]["id"] for e in events if orjson.loads(e)["namespace"] == 0
    }
    with ReplayThread(feed, ReplayOptions(hold_open=True)) as replay:
        env = pipeline_environment(
            stack_env, replay.url, INGESTION_WIKIMEDIA_FILTERS_NAMESPACES="[0]"
        )
        settings = load_settings(environ=env)
        with running_worker(env, tmp_path / "worker.log") as worker:

            def settled() -> bool:
                try:
                    values = worker_metrics(env)
                    outcomes = ("valid", "dead_letter", "filtered", "duplicate", "canary")
                    counted = sum(
                        values[f'wikipulse_ingest_events_total{{outcome="{o}"}}'] for o in outcomes
                    )
                    return counted >= len(feed)
                except OSError:
                    return False

            wait_until(settled, 120, "every raw record to get an outcome", worker=worker)
            values = worker_metrics(env)
            health = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{env['APP_WEB_PORT']}/health").read()
            )
    outcome = {
        o: values[f'wikipulse_ingest_events_total{{outcome="{o}"}}']
        for o in ("valid", "dead_letter", "filtered", "duplicate", "canary")
    }
    assert values["wikipulse_sse_events_received_total"] == len(feed)
    assert sum(outcome.values()) == len(feed)
    assert outcome["valid"] == len(in_namespace_0)
    assert outcome["canary"] == 1
    assert outcome["dead_letter"] == 0
    # Repeats of namespace-0 events are duplicates; repeats of others are filtered first.
    repeated_in_0 = sum(1 for e in repeated if orjson.loads(e)["meta"]["id"] in in_namespace_0)
    assert outcome["duplicate"] == repeated_in_0
    assert outcome["filtered"] == len(events) - len(in_namespace_0) + len(repeated) - repeated_in_0
    assert health["healthy"] and health["connected"] and health["last_canary"]
    typed = topics(settings)["typed"]
    assert {orjson.loads(r.value)["event_id"] for r in typed} == in_namespace_0
    assert len(typed) == len(in_namespace_0)


def test_repeats_meet_in_one_raw_partition_of_three_and_are_dropped_there(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Raw records are keyed by meta.id: with three raw partitions each event's repeats land in
    its partition, whose dedup state drops them."""
    events = synthetic(60, seed=15)
    repeated = events[:20]
    feed = [*events, *repeated]
    outcomes = ("valid", "dead_letter", "filtered", "duplicate", "canary")
    with ReplayThread(feed, ReplayOptions(hold_open=True)) as replay:
        env = pipeline_environment(stack_env, replay.url, KAFKA_TOPICS_RAW_PARTITIONS="3")
        settings = load_settings(environ=env)
        with running_worker(env, tmp_path / "worker.log") as worker:

            def counted() -> dict[str, float]:
                values = worker_metrics(env)
                return {o: values[f'wikipulse_ingest_events_total{{outcome="{o}"}}']
                        for o in outcomes}  # fmt: skip

            def settled() -> bool:
                try:
                    return sum(counted().values()) >= len(feed)
                except OSError:
                    return False

            wait_until(settled, 120, "every raw record to get an outcome", worker=worker)
            outcome = counted()
    assert outcome["valid"] == len(events)
    assert outcome["duplicate"] == len(repeated)
    records = topics(settings)
    partitions: defaultdict[str, list[int]] = defaultdict(list)
    for record in records["raw"]:
        assert record.key == orjson.loads(record.value)["meta"]["id"].encode()
        partitions[orjson.loads(record.value)["meta"]["id"]].append(record.partition)
    assert len(records["raw"]) == len(feed)
    assert all(len(partitions[orjson.loads(e)["meta"]["id"]]) == 2 for e in repeated)
    assert all(len(set(seen)) == 1 for seen in partitions.values()), "a repeat changed partition"
    assert {p for seen in partitions.values() for p in seen} == {0, 1, 2}
    typed_ids = Counter(orjson.loads(r.value)["event_id"] for r in records["typed"])
    assert set(typed_ids) == set(partitions) and max(typed_ids.values()) == 1


def test_bad_input_is_dead_lettered_and_the_typed_topic_can_be_rebuilt(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    valid = synthetic(40, seed=13)
    bad = corpus()
    feed: list[bytes] = []
    for index, item in enumerate(bad):  # bad input between good events: the worker goes on
        feed += [valid[index % len(valid)] if index < len(valid) else valid[0], item.data]
    feed += valid[len(bad) :]
    valid_ids = {orjson.loads(e)["meta"]["id"] for e in valid}
    with ReplayThread(feed, ReplayOptions(hold_open=True)) as replay:
        env = pipeline_environment(stack_env, replay.url)
        settings = load_settings(environ=env)
        t = settings.kafka.topics

        def dead_letters() -> list:
            return asyncio.run(read_topic(settings, t.dead_letter.name, t.dead_letter.partitions))

        with running_worker(env, tmp_path / "worker.log") as worker:
            wait_until(lambda: len(dead_letters()) >= len(bad), 120, "dead letters", worker=worker)
            wait_until(
                lambda: typed_count(settings) >= len(valid_ids), 60, "typed events", worker=worker
            )
    records = topics(settings)
    by_offset = {r.offset: r for r in records["raw"]}
    reasons = {}
    for record in records["dead_letter"]:
        headers = dict(record.headers)
        raw = by_offset[int(headers["origin-offset"])]
        assert raw.value == record.value
        reasons[record.value] = (headers["reason-code"].decode(), headers["reason-field"].decode())
    for item in bad:
        assert reasons.get(item.data) == (item.code, item.field or ""), item.name
    assert {orjson.loads(r.value)["event_id"] for r in records["typed"]} == valid_ids

    # Rebuild: the normalizer alone (no SSE) over the raw log into a fresh typed topic.
    rebuild_env = {
        **env,
        "INGESTION_ENABLED": "false",
        "APP_ID": env["APP_ID"] + "-rebuild",
        "KAFKA_TOPICS_TYPED_NAME": t.typed.name + "-rebuilt",
        "KAFKA_TOPICS_DEAD_LETTER_NAME": t.dead_letter.name + "-rebuilt",
    }
    ensure_topics(load_settings(environ=rebuild_env))
    rebuilt_settings = load_settings(environ=rebuild_env)
    with running_worker(rebuild_env, tmp_path / "rebuild.log") as worker:
        wait_until(
            lambda: typed_count(rebuilt_settings) >= len(valid_ids), 120, "rebuild", worker=worker
        )
    rebuilt = topics(rebuilt_settings)
    assert sorted(r.value for r in rebuilt["typed"]) == sorted(r.value for r in records["typed"])
    assert len(rebuilt["dead_letter"]) == len(bad)


def test_another_worker_takes_the_stream_over_when_the_leader_dies(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    events = synthetic(384, seed=14)
    expected_ids = {orjson.loads(e)["meta"]["id"] for e in events}
    with ReplayThread(events, ReplayOptions(speed=1.0, hold_open=True)) as replay:
        env = pipeline_environment(stack_env, replay.url)
        # Same app id, its own web port and data directory: a second worker of one deployment.
        # (and without /metrics: monitoring.enabled is false).
        env_b = {**env, "APP_WEB_PORT": str(free_port()), "WIKIPULSE_HOME": str(tmp_path / "b"),
                 "MONITORING_ENABLED": "false"}  # fmt: skip
        settings = load_settings(environ=env)
        envs = {"a": env, "b": env_b}
        workers = {name: WorkerProcess(e, tmp_path / f"{name}.log") for name, e in envs.items()}
        for worker in workers.values():
            worker.start()
        try:

            def roles() -> dict[str, bool | None]:
                return {name: (worker_health(e) or {}).get("leader") for name, e in envs.items()}

            wait_until(lambda: sorted(map(str, roles().values())) == ["False", "True"], 120,
                       "one leader and one standby")  # fmt: skip
            leader = next(name for name, is_leader in roles().items() if is_leader)
            standby = "b" if leader == "a" else "a"
            # The standby normalizes only and says it is healthy; one SSE connection in all.
            assert worker_metrics(env)  # monitoring.enabled (the default): /metrics is served
            with pytest.raises(urllib.error.HTTPError, match="404"):
                worker_metrics(env_b)
            standby_health = worker_health(envs[standby])
            assert standby_health is not None and standby_health["healthy"]
            assert not standby_health["connected"]
            wait_until(lambda: typed_count(settings) >= 40, 120, "the first typed events")
            workers[leader].kill()
            wait_until(
                lambda: (worker_health(envs[standby]) or {}).get("connected") is True,
                120,
                "the standby following the stream",
                worker=workers[standby],
            )
            wait_until(lambda: typed_count(settings) >= len(events), 120, "all typed events",
                       worker=workers[standby])  # fmt: skip
        finally:
            for worker in workers.values():
                worker.stop()
        assert replay.server.max_active <= 1, "more than one SSE connection at a time"
    typed_ids = Counter(orjson.loads(r.value)["event_id"] for r in topics(settings)["typed"])
    assert set(typed_ids) == expected_ids
    assert max(typed_ids.values()) == 1, "an event doubled in the typed topic"
