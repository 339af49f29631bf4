"""The ingest task's raw records without a broker: their key, and the producers' options.

(The task against a real broker: tests/app/test_worker_pipeline.py.)
"""

from __future__ import annotations

import orjson
import pytest

from app.config import load_settings
from app.config.clients import producer_options
from app.ingest.task import ingest_producer, raw_key
from app.worker import Worker
from tests.app import examples
from tests.app.examples import encoded


def test_a_raw_record_is_keyed_by_its_meta_id() -> None:
    data = encoded(examples.current_edit())
    assert raw_key(data) == orjson.loads(data)["meta"]["id"].encode()


@pytest.mark.parametrize(
    "data",
    [b"{", b"\xff\xfe", b"[1, 2]", b'"text"', b"{}", b'{"meta": []}', b'{"meta": {"id": 7}}',
     b'{"meta": {"id": ""}}', b'{"meta": {"id": null}}', b""],
)  # fmt: skip
def test_a_payload_without_a_meta_id_gets_no_key(data: bytes) -> None:
    assert raw_key(data) is None


async def test_every_producer_shares_the_options_built_in_one_place() -> None:
    settings = load_settings(
        environ={
            "WIKIPULSE_ENV_FILE": "/nonexistent",
            "KAFKA_PRODUCER_COMPRESSION": "lz4",
            "KAFKA_PRODUCER_LINGER_MS": "7",
        }
    )
    options = producer_options(settings.kafka, client_id="x")
    assert options["acks"] == "all" and options["enable_idempotence"] is True
    assert options["compression_type"] == "lz4" and options["linger_ms"] == 7
    assert options["max_request_size"] == settings.kafka.max_message_bytes
    assert options["client_id"] == "x"
    assert producer_options(settings.kafka)["bootstrap_servers"] == settings.kafka.bootstrap_servers
    ingest = ingest_producer(settings)
    transactional = Worker(settings).normalizer._producer(0)
    try:
        for producer in (ingest, transactional):
            assert producer._compression_type == "lz4"
            assert producer._max_request_size == settings.kafka.max_message_bytes
        assert ingest.client._client_id == f"{settings.kafka.client_id}-ingest"
        assert transactional.client._client_id == f"{settings.kafka.client_id}-normalizer"
        assert transactional._txn_manager is not None and ingest._txn_manager is not None
    finally:
        for producer in (ingest, transactional):
            await producer.stop()
