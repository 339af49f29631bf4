"""The normalizer's batches without a broker: every outcome, in order, and the dedup state;
the normalizer service's lifecycle with stand-in clients.

``plan_batch`` is what one transaction writes; Kafka (sending it, committing it) is exercised by
tests/app/test_worker_pipeline.py against a real broker.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import mode
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from app.config import load_settings
from app.contract import Outcome
from app.normalize import Filters
from app.normalize.batch import Batch, DedupState, Topics, plan_batch
from app.normalize.service import Normalizer
from app.worker import Worker
from tests import events
from tests.app import examples
from tests.app.bad_input import corpus
from tests.app.examples import encoded

RECEIVED = b"1781970600000"  # 2026-06-20T15:50:00Z
#: The synthetic events' start: the hour before RECEIVED, so every one is in range.
START = datetime(2026, 6, 20, 14, 50, tzinfo=UTC)
NOW = 1_781_970_700.0
WINDOW = 3600.0


@pytest.fixture(scope="module")
def topics() -> Topics:
    return Topics.of(load_settings(environ={"WIKIPULSE_ENV_FILE": "/nonexistent"}))


def records(payloads: list[bytes], first: int = 0) -> list[ConsumerRecord]:
    headers = [("received-at", RECEIVED), ("sse-id", b"[{}]")]
    raw = "wikimedia.recentchange.raw"
    return [
        ConsumerRecord(raw, 0, first + i, 0, 0, None, data, None, -1, len(data), headers)
        for i, data in enumerate(payloads)
    ]


def plan(topics: Topics, state: DedupState, payloads: list[bytes], first: int = 0, **kw) -> Batch:
    return plan_batch(
        records(payloads, first),
        topics=topics,
        state=state,
        filters=kw.pop("filters", Filters()),
        max_bytes=1 << 20,
        now=kw.pop("now", NOW),
        **kw,
    )


def event_id(data: bytes) -> str:
    return orjson.loads(data)["meta"]["id"]


def synthetic(count: int) -> list[bytes]:
    """``count`` distinct valid events (each its own ``meta.id``, no canaries)."""
    return events.synthetic(count, start=START)


def test_every_outcome_in_order(topics: Topics) -> None:
    valid, other = encoded(examples.current_edit()), encoded(examples.current_new_page())
    canary = orjson.loads(valid)
    canary["meta"]["domain"] = "canary"
    bad = corpus()[0]
    batch = plan(topics, DedupState(WINDOW), [valid, valid, orjson.dumps(canary), bad.data, other])
    assert batch.outcomes == Counter(
        {Outcome.VALID: 2, Outcome.DUPLICATE: 1, Outcome.CANARY: 1, Outcome.DEAD_LETTER: 1}
    )
    assert [out.topic for out in batch.outputs] == [
        topics.typed, topics.dead_letter, topics.typed, topics.changelog
    ]  # fmt: skip
    typed = batch.outputs[0]
    assert orjson.loads(typed.value)["event_id"] == event_id(valid)
    assert typed.key == b"commonswiki:6:" + orjson.loads(valid)["title"].encode()
    headers = dict(typed.headers)
    assert headers["schema-version"] == b"1" and headers["origin-offset"] == b"0"
    dead = batch.outputs[1]
    dead_headers = dict(dead.headers)
    assert dead.value == bad.data and dead_headers["reason-code"] == b"invalid_json"
    assert dead_headers["origin-offset"] == b"3" and dead_headers["sse-id"] == b"[{}]"
    # The changelog record: one per batch, on the raw partition, with the batch's new ids.
    changelog = batch.outputs[-1]
    assert changelog.key == b"0:0" and changelog.partition == 0
    assert orjson.loads(changelog.value) == {"t": NOW, "ids": [event_id(valid), event_id(other)]}
    assert batch.next_offset == 5 and batch.last_canary == NOW
    assert batch.last_event_time == orjson.loads(other)["timestamp"]


def test_the_whole_bad_input_corpus_and_the_batch_goes_on(topics: Topics) -> None:
    bad = corpus()
    good = synthetic(len(bad))
    payloads = [p for pair in zip(bad, good, strict=True) for p in (pair[0].data, pair[1])]
    batch = plan(topics, DedupState(WINDOW), payloads)
    assert batch.outcomes == Counter({Outcome.DEAD_LETTER: len(bad), Outcome.VALID: len(good)})
    dead = [dict(out.headers) for out in batch.outputs if out.topic == topics.dead_letter]
    assert [(h["reason-code"].decode(), h["reason-field"].decode()) for h in dead] == [
        (item.code, item.field or "") for item in bad
    ]
    assert [int(h["origin-offset"]) for h in dead] == list(range(0, len(payloads), 2))


def test_filters(topics: Topics) -> None:
    payloads = synthetic(40)
    namespaces = {orjson.loads(e)["namespace"] for e in payloads}
    assert len(namespaces) > 1
    keep = min(namespaces)
    batch = plan(topics, DedupState(WINDOW), payloads, filters=Filters(namespaces={keep}))
    kept = sum(orjson.loads(e)["namespace"] == keep for e in payloads)
    assert batch.outcomes == Counter({Outcome.VALID: kept, Outcome.FILTERED: len(payloads) - kept})


def apply(state: DedupState, batch: Batch) -> None:
    """What the normalizer does once a batch is committed."""
    state.tombstoned(batch.expired)
    if batch.new_ids:
        state.add(batch.changelog_key, batch.processed_at, batch.new_ids)


def replay_changelog(batches: list[Batch], topics: Topics) -> DedupState:
    """A fresh state read back from the changelog records the batches wrote."""
    restored = DedupState(WINDOW)
    for batch in batches:
        for out in batch.outputs:
            if out.topic == topics.changelog:
                restored.restore(out.key, out.value)
    return restored


def test_dedup_across_batches_survives_a_restore_and_forgets_after_the_window(
    topics: Topics,
) -> None:
    payloads = synthetic(30)
    state = DedupState(WINDOW)
    first = plan(topics, state, payloads[:20])
    apply(state, first)
    # A replay repeats events 10..19 and brings 20..29.
    second = plan(topics, state, payloads[10:], first=20, now=NOW + 60)
    apply(state, second)
    assert second.outcomes == Counter({Outcome.DUPLICATE: 10, Outcome.VALID: 10})
    assert second.new_ids == [event_id(e) for e in payloads[20:]]

    # A restarted worker reads the changelog back: the same ids, the same decisions.
    restored = replay_changelog([first, second], topics)
    assert restored.first_seen == state.first_seen
    again = plan(topics, restored, payloads[:5], first=40, now=NOW + 120)
    assert again.outcomes == Counter({Outcome.DUPLICATE: 5})

    # After the window the first batch's ids are new again (the second's not), and the purge
    # tombstones the first batch.
    later = NOW + WINDOW + 30
    purge = plan(topics, state, [payloads[0], payloads[25]], first=50, now=later, purge=True)
    assert purge.outcomes == Counter({Outcome.VALID: 1, Outcome.DUPLICATE: 1})
    assert purge.expired == [b"0:0"]
    tombstones = [out for out in purge.outputs if out.value is None]
    assert [(t.topic, t.key, t.partition) for t in tombstones] == [(topics.changelog, b"0:0", 0)]
    apply(state, purge)
    assert state.seen(event_id(payloads[0]), later) and not state.seen(event_id(payloads[5]), later)
    assert state.seen(event_id(payloads[25]), later)
    restored = replay_changelog([first, second, purge], topics)
    assert restored.first_seen == state.first_seen


def test_a_committed_batch_updates_metrics_and_health(topics: Topics) -> None:
    settings = load_settings(environ={"WIKIPULSE_ENV_FILE": "/nonexistent"})
    worker = Worker(settings)
    valid = encoded(examples.current_edit())
    canary = orjson.loads(valid)
    canary["meta"]["domain"] = "canary"
    batch = plan(topics, DedupState(WINDOW), [valid, valid, orjson.dumps(canary), b"{"])
    worker.normalizer.committed(batch)
    assert worker.metrics.outcome_totals() == {
        "valid": 1.0, "duplicate": 1.0, "canary": 1.0, "dead_letter": 1.0, "filtered": 0.0,
    }  # fmt: skip
    assert worker.health.last_canary == NOW
    assert worker.health.last_event_time == orjson.loads(valid)["timestamp"]


def test_a_flood_forgets_the_oldest_ids_first_and_memory_stays_bounded(
    topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = synthetic(60)
    state = DedupState(WINDOW, max_ids=45)
    batches = []
    for first in (0, 20, 40):
        batch = plan(topics, state, payloads[first : first + 20], first=first, now=NOW + first)
        apply(state, batch)
        batches.append(batch)
    # 60 ids seen, 45 at most kept: the first batch (the oldest) is forgotten, with a warning.
    assert len(state) == 40 and state.evicted == [b"0:0"]
    assert "ingestion.dedup.max_ids = 45" in caplog.text
    assert not state.seen(event_id(payloads[0]), NOW + 60)
    assert state.seen(event_id(payloads[20]), NOW + 60)
    # The next batch tombstones it in the changelog (and repeats of it are new again).
    again = plan(topics, state, payloads[:1], first=60, now=NOW + 61)
    assert again.outcomes == Counter({Outcome.VALID: 1})
    assert again.expired == [b"0:0"]
    assert [(o.key, o.value) for o in again.outputs if o.value is None] == [(b"0:0", None)]
    apply(state, again)
    assert state.evicted == []
    # Read back from the changelog, the cap holds too.
    restored = DedupState(WINDOW, max_ids=45)
    for batch in [*batches, again]:
        for out in batch.outputs:
            if out.topic == topics.changelog:
                restored.restore(out.key, out.value)
    assert len(restored) <= 45 and restored.first_seen == state.first_seen


def test_a_truncated_record_is_dead_lettered_with_its_size_as_received(topics: Topics) -> None:
    """The ingest task cut the event to fit in a Kafka record: the dead letter carries its
    ``truncated-from`` header on, and its reason gives the size as received."""
    head = encoded(examples.current_edit())
    cut = head + b" " * ((1 << 20) + 10 - len(head))  # what was kept: over max_bytes too

    def truncated(kept: bytes) -> Batch:
        record = ConsumerRecord(
            "wikimedia.recentchange.raw", 0, 7, 0, 0, None, kept, None, -1, len(kept),
            [("received-at", RECEIVED), ("sse-id", b"[{}]"), ("truncated-from", b"20971520")],
        )  # fmt: skip
        return plan_batch(
            [record], topics=topics, state=DedupState(WINDOW), filters=Filters(),
            max_bytes=1 << 20, now=NOW,
        )  # fmt: skip

    batch = truncated(cut)
    assert batch.outcomes == Counter({Outcome.DEAD_LETTER: 1})
    (dead,) = batch.outputs
    headers = dict(dead.headers)
    assert dead.value == cut and headers["truncated-from"] == b"20971520"
    assert headers["reason-code"] == b"too_large" and headers["reason-field"] == b""
    assert headers["reason"].decode() == (
        f"too_large: 20971520 bytes (truncated to {len(cut)} in the raw topic), "
        f"the limit is {1 << 20}"
    )
    # A head that happens to be small is still the head of a too large event.
    assert dict(truncated(head[:100]).outputs[0].headers)["reason-code"] == b"too_large"


# ---- the service: started and stopped with the worker's Faust app ---------------------------


class StandInConsumer:
    """The calls the normalizer makes on its consumer; ``getmany`` fails with ``failure``."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure
        self.topics: list[str] = []
        self.started = self.stopped = False

    def subscribe(self, topics: list[str], listener: object) -> None:
        self.topics = topics

    async def start(self) -> None:
        self.started = True

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if self.failure is not None:
            raise self.failure
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def stop(self) -> None:
        self.stopped = True


class StandInProducer:
    stopped = False

    async def stop(self) -> None:
        self.stopped = True


def normalizer_with(consumer: StandInConsumer, monkeypatch: pytest.MonkeyPatch) -> Normalizer:
    worker = Worker(load_settings(environ={"WIKIPULSE_ENV_FILE": "/nonexistent"}))
    normalizer = worker.normalizer

    async def changelog_exists() -> None:
        pass

    monkeypatch.setattr(normalizer, "ensure_changelog", changelog_exists)
    monkeypatch.setattr(normalizer, "_consumer", lambda: consumer)
    return normalizer


def test_the_worker_runs_the_normalizer_as_a_service_of_its_app() -> None:
    worker = Worker(load_settings(environ={"WIKIPULSE_ENV_FILE": "/nonexistent"}))
    assert isinstance(worker.normalizer, mode.Service)
    assert worker.normalizer in worker.app._extra_services  # started once the app runs


async def test_the_service_starts_its_loop_and_stops_its_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = StandInConsumer()
    normalizer = normalizer_with(consumer, monkeypatch)
    app = mode.Service()  # stands in for the Faust app: it starts and stops its dependencies
    app.add_dependency(normalizer)
    await app.start()
    assert consumer.started and consumer.topics == [normalizer.topics.raw]
    producer = StandInProducer()
    normalizer.producers[0], normalizer.dedup[0] = producer, DedupState(WINDOW)  # type: ignore
    assert "raw partitions [0]" in repr(normalizer)
    await app.stop()
    assert consumer.stopped and producer.stopped
    assert normalizer.producers == {} and normalizer.dedup == {}
    assert not app.crashed


async def test_a_failing_loop_crashes_the_app_so_the_worker_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure = RuntimeError("the broker went away for good")
    consumer = StandInConsumer(failure)
    normalizer = normalizer_with(consumer, monkeypatch)
    app = mode.Service()
    app.add_dependency(normalizer)
    await app.start()
    await asyncio.wait_for(app._crashed.wait(), 5)
    assert app.crashed and app.crash_reason is failure
    await app.stop()
    assert consumer.stopped


def test_both_versions_written_for_each_valid_event_in_one_batch() -> None:
    """``APP_TYPED_VERSIONS=[1, 2]``: each event goes to both topics, in the same batch (so in
    the same transaction), each record under its version's headers."""
    both = Topics.of(
        load_settings(environ={"WIKIPULSE_ENV_FILE": "/nonexistent", "APP_TYPED_VERSIONS": "[1,2]"})
    )
    assert [topic for _, topic in both.typed_versions] == [
        "wikimedia.recentchange.v1",
        "wikimedia.recentchange.v2",
    ]
    hidden = examples.hidden_user_edit()
    hidden["meta"]["id"] = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"  # a change of its own
    payloads = [encoded(examples.current_edit()), encoded(hidden)]
    batch = plan(both, DedupState(WINDOW), payloads)
    typed = [out for out in batch.outputs if out.topic != both.changelog]
    assert [out.topic for out in typed] == [
        "wikimedia.recentchange.v1", "wikimedia.recentchange.v2"
    ] * 2  # fmt: skip
    for v1, v2, payload in zip(typed[::2], typed[1::2], payloads, strict=True):
        assert v1.key == v2.key
        assert dict(v1.headers)["schema"] == b"wikipulse/recentchange/1"
        assert dict(v2.headers)["schema"] == b"wikipulse/recentchange/2"
        assert dict(v2.headers)["schema-version"] == b"2"
        one, two = orjson.loads(v1.value), orjson.loads(v2.value)
        source = orjson.loads(payload)
        assert two["editor"] == {
            "name": source.get("user"),
            "kind": one["user_kind"],
            "bot": source["bot"],
        }
        assert {k: v for k, v in one.items() if k not in ("user", "user_kind", "bot")} == {
            **{k: v for k, v in two.items() if k != "editor"},
            "schema_version": 1,
        }
    assert orjson.loads(typed[3].value)["editor"] == {"name": None, "kind": "hidden", "bot": False}
