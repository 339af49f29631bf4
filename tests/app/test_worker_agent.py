"""The normalize agent without a broker (Faust's test_context): every outcome, in order.

Kafka is outside this test: the two places the agent touches it — handing a record to the
producer, and reading the output topics' tails after a restart — are replaced by in-memory
versions on a subclass; everything else (the agent, the dedup table, routing, metrics) is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from app.config import load_settings
from app.contract import Outcome
from app.worker import Worker
from tests.app.bad_input import corpus
from tests.realdata import CURRENT, line, lines


class InMemoryWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []
        self.already_written: set[int] = set()

    async def _send(self, topic, key, value, headers):  # type: ignore[override]
        self.sent.append((topic, key, value, dict(headers)))

    async def _already_written(self, message: Any) -> bool:
        return message.offset in self.already_written


@pytest.fixture
async def worker() -> AsyncIterator[InMemoryWorker]:
    settings = load_settings(
        environ={
            "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[]",
            "WIKIPULSE_ENV_FILE": "/nonexistent",
        }
    )
    instance = InMemoryWorker(settings)
    app = instance.app
    app.loop = asyncio.get_running_loop()
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    yield instance


async def feed(worker: InMemoryWorker, payloads: list[bytes]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    original = worker.process

    async def recording(message: Any, data: bytes) -> Outcome:
        outcome = await original(message, data)
        outcomes.append(outcome)
        return outcome

    worker.process = recording  # type: ignore[method-assign]
    agent = worker.app.agents["normalize-raw"]
    async with agent.test_context() as context:
        for payload in payloads:
            await context.put(payload, headers={"received-at": b"1781970600000"})
    return outcomes


def topics_of(worker: InMemoryWorker) -> list[str]:
    return [topic for topic, *_ in worker.sent]


async def test_every_outcome(worker: InMemoryWorker) -> None:
    valid = line(CURRENT, 1)
    canary = orjson.loads(valid)
    canary["meta"]["domain"] = "canary"
    bad = corpus()[0]
    outcomes = await feed(worker, [valid, valid, orjson.dumps(canary), bad.data])
    assert outcomes == [Outcome.VALID, Outcome.DUPLICATE, Outcome.CANARY, Outcome.DEAD_LETTER]
    typed, dead = (
        worker.settings.kafka.topics.typed.name,
        worker.settings.kafka.topics.dead_letter.name,
    )
    assert topics_of(worker) == [typed, dead]
    _, key, value, headers = worker.sent[0]
    assert orjson.loads(value)["event_id"] == orjson.loads(valid)["meta"]["id"]
    assert key == b"commonswiki:6:" + orjson.loads(valid)["title"].encode()
    assert headers["schema-version"] == b"1"
    _, _, dead_value, dead_headers = worker.sent[1]
    assert dead_value == bad.data and dead_headers["reason-code"] == b"invalid_json"
    assert worker.health.last_canary is not None
    totals = worker.metrics.outcome_totals()
    assert totals == {
        "valid": 1.0,
        "duplicate": 1.0,
        "canary": 1.0,
        "dead_letter": 1.0,
        "filtered": 0.0,
    }


async def test_the_whole_corpus_and_the_worker_goes_on(worker: InMemoryWorker) -> None:
    bad = corpus()
    good = list(lines(CURRENT)[: len(bad)])
    payloads = [p for pair in zip(bad, good, strict=True) for p in (pair[0].data, pair[1])]
    outcomes = await feed(worker, payloads)
    assert outcomes[0::2] == [Outcome.DEAD_LETTER] * len(bad)
    assert outcomes[1::2] == [Outcome.VALID] * len(good)
    dead = [headers for topic, _, _, headers in worker.sent if topic.endswith("dead-letter")]
    assert [(h["reason-code"].decode(), h["reason-field"].decode()) for h in dead] == [
        (item.code, item.field or "") for item in bad
    ]


async def test_records_already_written_are_not_written_again(worker: InMemoryWorker) -> None:
    events = list(lines(CURRENT)[:6])
    worker.already_written = {1, 2}  # a crash after these two outputs, before the commit
    outcomes = await feed(worker, events)
    assert outcomes == [Outcome.VALID] * 6  # seen at their own origin: not duplicates
    written = [orjson.loads(value)["event_id"] for _, _, value, _ in worker.sent]
    expected = [orjson.loads(e)["meta"]["id"] for i, e in enumerate(events) if i not in {1, 2}]
    assert written == expected
