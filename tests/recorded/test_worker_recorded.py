"""The worker over every recording, served by the replay server, in one run: each event ends in
exactly one outcome, and the typed topic holds one record per distinct ``meta.id``.

The expected counts come from the files with plain JSON parsing: canaries are the events whose
``meta.domain`` is ``canary``; of the others, the first of each ``meta.id`` is valid and every
later one a duplicate (the dedup window, an hour, spans the run); a line that is not a JSON
object is the only acceptable dead letter (a real event the normalizer refused is a finding).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config import load_settings
from infra.replay.server import ReplayOptions
from infra.stack import Stack
from tests.harness import (
    ReplayThread,
    pipeline_environment,
    read_topic,
    running_worker,
    wait_until,
    worker_metrics,
)
from tests.recordings import lines

pytestmark = pytest.mark.integration

OUTCOMES = ("valid", "dead_letter", "filtered", "duplicate", "canary")


def as_object(line: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def test_every_recorded_event_ends_in_exactly_one_outcome(
    recordings: list[Path], stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    # One feed of every file in turn (one worker run): repeats across files are repeats too.
    feed = [line for path in recordings for line in lines(path)]
    objects = [as_object(line) for line in feed]
    not_json = [line for line, event in zip(feed, objects, strict=True) if event is None]
    events = [event for event in objects if event is not None]
    canaries = sum(1 for event in events if event["meta"].get("domain") == "canary")
    change_ids = [
        event["meta"]["id"] for event in events if event["meta"].get("domain") != "canary"
    ]
    distinct = set(change_ids)

    with ReplayThread(feed, ReplayOptions(hold_open=True)) as replay:
        env = pipeline_environment(stack_env, replay.url)  # no filter: every namespace
        settings = load_settings(environ=env)
        with running_worker(env, tmp_path / "worker.log") as worker:

            def outcomes() -> dict[str, float]:
                values = worker_metrics(env)
                return {
                    o: values[f'wikipulse_ingest_events_total{{outcome="{o}"}}'] for o in OUTCOMES
                }

            def settled() -> bool:
                try:
                    return sum(outcomes().values()) >= len(feed)
                except (OSError, KeyError):
                    return False

            wait_until(settled, 300, "every recorded event to get an outcome", worker=worker)
            counted = outcomes()
            received = worker_metrics(env)["wikipulse_sse_events_received_total"]
        assert replay.server.events_sent == len(feed)

    t = settings.kafka.topics
    typed = asyncio.run(read_topic(settings, t.typed.name, t.typed.partitions))
    dead = asyncio.run(read_topic(settings, t.dead_letter.name, t.dead_letter.partitions))
    refused = Counter(dict(r.headers)["reason-code"].decode() for r in dead)
    assert sorted(r.value for r in dead) == sorted(not_json), f"dead letters: {refused}"
    assert received == len(feed)
    assert counted == {
        "valid": len(distinct),
        "dead_letter": len(not_json),
        "filtered": 0,
        "duplicate": len(change_ids) - len(distinct),
        "canary": canaries,
    }
    typed_ids = Counter(orjson.loads(r.value)["event_id"] for r in typed)
    assert set(typed_ids) == distinct
    assert max(typed_ids.values(), default=1) == 1, "an event doubled in the typed topic"
    for path in recordings:  # each recording whole
        parsed = [event for line in lines(path) if (event := as_object(line)) is not None]
        ids = {e["meta"]["id"] for e in parsed if e["meta"].get("domain") != "canary"}
        assert ids <= set(typed_ids), path.name
