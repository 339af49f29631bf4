"""Three Kafka brokers under the whole pipeline (``up --cluster``): every topic with three
replicas and ``min.insync.replicas=2``, ``status`` naming each broker and the cluster's health,
and the broker that leads the most typed-topic partitions SIGKILLed while events flow: the
pipeline writes on with the other two, ``up`` brings the broker back, it catches up, and nothing
is lost or doubled."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra.processes import pid_alive, wait_for
from tests.cluster.conftest import BROKERS, Cluster
from tests.events import changes, synthetic
from tests.harness import read_topic, wait_until
from tests.spark.helpers import golden, user_edit_counts, wiki_activity

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = synthetic(600, seed=57, start=datetime(2026, 11, 20, 9, 0, tzinfo=UTC), rate=5.0,
                   duplicate_rate=0.05, canary_interval=timedelta(seconds=20))  # fmt: skip
#: Served before the fault; then the rest at PACE (× event time): some 20 s of events flowing.
BEFORE = 200
PACE = "4"


def serve(cluster: Cluster, count: int, *, speed: str, first: bool = False) -> str:
    """The recording grows to the first ``count`` events (a new file: ``up --replay`` keeps a
    server serving the same one); the worker gets the new ones."""
    recording = cluster.home.parent / f"{cluster.home.name}-events-{count}.ndjson"
    recording.write_bytes(b"".join(line + b"\n" for line in EVENTS[:count]))
    layout = ["--cluster"] if first else []
    code, out, err = cluster.cli("up", *layout, "--replay", str(recording), "--once",
                                 "--speed", speed)  # fmt: skip
    assert code == 0, out + err
    return out


def typed_ids(cluster: Cluster) -> Counter[str]:
    topic = cluster.settings.kafka.topics.typed
    records = asyncio.run(read_topic(cluster.settings, topic.name, topic.partitions))
    return Counter(orjson.loads(record.value)["event_id"] for record in records)


def assert_exactly_once(cluster: Cluster, served: int) -> None:
    expected = Counter(dict.fromkeys(changes(EVENTS[:served]), 1))
    wait_until(lambda: typed_ids(cluster) == expected, 180,
               f"each of the first {served} events once in the typed topic")  # fmt: skip
    tables = golden(EVENTS[:served], window=cluster.settings.spark.windowing.duration)
    wait_until(lambda: (user_edit_counts(cluster.settings), wiki_activity(cluster.settings))
               == tables, 180, f"the tables of the first {served} events")  # fmt: skip


async def describe(cluster: Cluster) -> tuple[list[dict], dict[str, dict[str, str]]]:
    """Our topics' partition metadata, and their configurations."""
    settings = cluster.settings
    names = [settings.kafka.topics.raw.name, settings.kafka.topics.typed.name,
             settings.kafka.topics.dead_letter.name]  # fmt: skip
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    configs = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}
        for response in responses
        for resource in response.resources
    }
    return topics, configs


def status(cluster: Cluster) -> tuple[int, str]:
    code, out, _ = cluster.cli("status")
    return code, out


def kafka_line(out: str) -> str:
    return next(line for line in out.splitlines() if re.match(r"\s*(up|DOWN|--)\s+kafka\s", line))


def test_up_cluster_runs_three_brokers_with_every_topic_on_three_replicas(
    cluster: Cluster,
) -> None:
    out = serve(cluster, BEFORE, speed="max", first=True)
    assert ", cluster layout" in out.splitlines()[0]
    started = re.findall(r"^kafka: started \(pid (\d+)\), broker (\d) at 127\.0\.0\.1:(\d+)$",
                         out, re.MULTILINE)  # fmt: skip
    assert [broker for _, broker, _ in started] == ["1", "2", "3"]
    ports = [port for _, port in cluster.settings.kafka.servers]
    assert [int(port) for *_, port in started] == ports
    assert (cluster.home / "layout").read_text() == "cluster\n"

    topics, configs = asyncio.run(describe(cluster))
    assert {t["topic"]: len(t["partitions"]) for t in topics} == {
        "wikimedia.recentchange.raw": 3,  # keyed by meta.id: repeats meet in one partition
        "wikimedia.recentchange.v1": 3,
        "wikimedia.recentchange.dead-letter": 1,
    }
    for topic in topics:
        for partition in topic["partitions"]:
            assert sorted(partition["replicas"]) == [1, 2, 3], (topic["topic"], partition)
    assert {name: config["min.insync.replicas"] for name, config in configs.items()} == {
        name: "2" for name in configs
    }

    assert_exactly_once(cluster, BEFORE)
    # A plain `status` (no flag) finds the layout the home recorded.
    assert wait_for(lambda: status(cluster)[0] == 0, timeout=60, interval=2), status(cluster)[1]
    out = status(cluster)[1]
    assert "3 broker(s) alive, 0 under-replicated and 0 offline partition(s)" in kafka_line(out)
    for broker in range(1, BROKERS + 1):
        assert re.search(rf"^\s+broker {broker}: pid \d+, 127\.0\.0\.1:\d+$", out, re.MULTILINE)


def test_the_broker_leading_most_typed_partitions_killed_mid_stream(cluster: Cluster) -> None:
    topics, _ = asyncio.run(describe(cluster))
    typed = next(t for t in topics if t["topic"] == "wikimedia.recentchange.v1")
    leader = Counter(p["leader"] for p in typed["partitions"]).most_common(1)[0][0]
    suffix = "" if leader == 1 else f"-{leader}"
    pid = int((cluster.home / "run" / f"kafka{suffix}.pid").read_text())

    serve(cluster, len(EVENTS), speed=PACE)
    before = sum(typed_ids(cluster).values())
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(pid), timeout=20)

    # The other two carry on: the typed topic grows while the broker is down.
    wait_until(lambda: sum(typed_ids(cluster).values()) > before + 50, 120,
               "events written with one broker down")  # fmt: skip
    code, out = status(cluster)
    assert code == 1
    assert f"broker {leader}: DOWN" in out and "DOWN: broker" in kafka_line(out)

    code, out, err = cluster.cli("up")
    assert code == 0, out + err
    assert re.search(rf"^kafka: started \(pid \d+\), broker {leader} at ", out, re.MULTILINE)
    assert len(re.findall(r"^kafka: running \(pid \d+\), broker \d at ", out, re.MULTILINE)) == 2
    # It catches up: no partition under-replicated.
    wait_until(lambda: "0 under-replicated and 0 offline" in kafka_line(status(cluster)[1]), 180,
               "the restarted broker back in every ISR")  # fmt: skip
    recovered = time.monotonic() - killed_at
    assert_exactly_once(cluster, len(EVENTS))
    print(f"broker {leader} SIGKILLed: back in every ISR after {recovered:.0f} s")
