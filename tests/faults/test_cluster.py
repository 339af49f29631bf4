"""The cluster layout under the whole pipeline, started once for this module
(``WIKIPULSE_LAYOUT=cluster``: what ``up --cluster`` records): three brokers, every topic with
three replicas and ``min.insync.replicas=2``; a Spark standalone master and two workers, the job's
executors on them; and ``status`` naming each broker and Spark daemon with the cluster's health.
Its faults (C1: a broker, C2: a Spark worker) report into the Reliability section like the
single-node ones.

While this module runs, the fault suite's single-node stack (started by the tests before it)
idles: its worker has no stream and its Spark job finds no new record.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra.processes import pid_alive, wait_for
from tests.conftest import make_home
from tests.dashboards.browser import RENDERED, chromium_page
from tests.faults.pipeline import PACE, SAMPLE, FaultStack, Run, kill_group
from tests.faults.results import Figures
from tests.harness import cli_environment, cluster_environment, run_cli, worker_health

pytestmark = [pytest.mark.faults, pytest.mark.slow]

BROKERS = 3


@dataclass(frozen=True)
class Cluster:
    stack: FaultStack
    warm_up: Run  # its worker runs until the next run starts


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    home = make_home("wikipulse-cluster-")
    workdir = Path(tempfile.mkdtemp(prefix="wikipulse-cluster-files-"))
    env = cli_environment(
        home,
        **cluster_environment(workers=3),  # C4: a third worker joins
        INGESTION_WIKIMEDIA_FILTERS_NAMESPACES="[]",  # every namespace: all events count
        INGESTION_BACKOFF_INITIAL="100 ms",
        INGESTION_BACKOFF_MAX="1 second",
        # Each run's file is served once, then the stream is silent: a worker still healthy
        # however long a loaded machine takes to recover (C2 once took over the 2 minutes).
        INGESTION_HEALTH_TIMEOUT="1 hour",
        SPARK_TRIGGER_PROCESSING_TIME="2 seconds",
    )
    stack = FaultStack(home, env, workdir)
    try:
        warm_up = stack.start("warm-up", stack.fresh_events(SAMPLE[:60]))
        stack.wait_caught_up(warm_up, time.monotonic())
        yield Cluster(stack, warm_up)
    finally:
        run_cli(env, "down", "--purge", timeout=180)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


async def describe(stack: FaultStack, names: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """These topics' partitions (leader, replicas, in-sync replicas), and their configs."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka.bootstrap_servers)
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


def status(run: Run) -> tuple[int, str]:
    """``status`` as the user of ``run`` (its worker, its raw topic) sees it."""
    result = run_cli(run.env, "status")
    return result.returncode, result.stdout


def component_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if re.match(rf"\s*\S+\s+{name}\s", line))


def kafka_line(out: str) -> str:
    return component_line(out, "kafka")


def spark_cluster(stack: FaultStack) -> dict[str, Any]:
    """The standalone master's own account of its workers and applications."""
    port = stack.settings.spark.local.master_ui_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=5) as response:
        state: dict[str, Any] = json.load(response)
    return state


def busy_workers(stack: FaultStack) -> list[dict[str, Any]]:
    """The alive workers that run an executor (a core in use) of the job."""
    return [w for w in spark_cluster(stack)["workers"] if w["state"] == "ALIVE" and w["coresused"]]


def delivered_exactly_once(stack: FaultStack, run: Run, figures: Figures) -> None:
    """Every served event once in the typed topic and once in the raw log, none dead-lettered;
    the delivery's figures recorded."""
    delivery = stack.delivery(run)
    figures.update(delivery.figures)
    assert (delivery.lost, delivery.doubled, delivery.dead_lettered) == (0, 0, 0), delivery
    assert delivery.typed_out == len(run.events)
    assert delivery.raw_doubled == 0, delivery


def test_three_brokers_hold_every_topic_on_three_replicas(cluster: Cluster) -> None:
    stack, run = cluster.stack, cluster.warm_up
    topics = run.settings.kafka.topics
    names = [topics.raw.name, topics.typed.name, topics.dead_letter.name]
    described, configs = asyncio.run(describe(stack, names))
    assert {t["topic"]: len(t["partitions"]) for t in described} == {
        "faults.warm-up.raw": 3,  # keyed by meta.id: a repeat meets its first copy
        "wikimedia.recentchange.v1": 3,
        "wikimedia.recentchange.dead-letter": 1,
    }
    for topic in described:
        for partition in topic["partitions"]:
            assert sorted(partition["replicas"]) == [1, 2, 3], (topic["topic"], partition)
            assert sorted(partition["isr"]) == [1, 2, 3], (topic["topic"], partition)
    assert {name: config["min.insync.replicas"] for name, config in configs.items()} == {
        name: "2" for name in names
    }
    assert (stack.home / "layout").read_text() == "cluster\n"

    code, out = status(run)
    assert code == 0, out
    assert "3 broker(s) alive, 0 under-replicated and 0 offline partition(s)" in kafka_line(out)
    for node, (_, port) in enumerate(stack.settings.kafka.servers, start=1):
        assert re.search(rf"^\s+broker {node}: pid \d+, 127\.0\.0\.1:{port}$", out, re.MULTILINE)


def test_the_spark_job_runs_on_executors_of_two_standalone_workers(cluster: Cluster) -> None:
    """``spark-submit --master spark://…``: one executor on each worker, the aggregates (the
    warm-up caught up) computed there."""
    stack, run = cluster.stack, cluster.warm_up
    state = spark_cluster(stack)
    assert state["aliveworkers"] == 2, state
    [app] = state["activeapps"]
    assert (app["name"], app["state"], app["cores"]) == (
        stack.settings.spark.app_name, "RUNNING", 2
    )  # fmt: skip
    assert [w["coresused"] for w in state["workers"]] == [1, 1], state["workers"]

    code, out = status(run)
    assert code == 0, out
    line = component_line(out, "spark-cluster")
    assert f"2 of 2 worker(s) alive; applications: {app['name']} (RUNNING)" in line, out
    for number in (1, 2):
        assert re.search(
            rf"^\s+worker {number}: pid \d+, 1 of 1 core\(s\) used, executors: "
            rf"{app['id']}/\d+$",
            out,
            re.MULTILINE,
        ), out
    assert re.search(r"^\s+master: pid \d+, UI http://127\.0\.0\.1:\d+$", out, re.M), out


def test_two_workers_share_the_raw_partitions_one_holding_the_stream(cluster: Cluster) -> None:
    run = cluster.warm_up
    code, out = status(run)
    assert code == 0, out
    port = int(run.env["APP_WEB_PORT"])
    lines = {
        name: re.search(
            rf"^\s+{name}: pid \d+, http://127\.0\.0\.1:{port + n}, (leader \(holds the stream\)"
            r"|standby), raw partitions ([\d, ]+)$",
            out,
            re.MULTILINE,
        )
        for n, name in enumerate(("worker", "worker-2"))
    }
    assert all(lines.values()), out
    roles = sorted(match[1] for match in lines.values() if match)
    assert roles == ["leader (holds the stream)", "standby"], out
    owned = [int(p) for match in lines.values() if match for p in match[2].split(", ")]
    assert sorted(owned) == [0, 1, 2], out  # each raw partition normalized by one of them
    assert all(match and match[2] for match in lines.values()), "a worker owns no partition"


def test_the_dashboard_fills_from_the_cluster(cluster: Cluster) -> None:
    """The served dashboard, in Chromium, shows the warm-up's aggregates (the only run so far):
    its sums equal the golden values."""
    run = cluster.warm_up
    _, wikis = run.expected()  # (window end, edits, new pages, bot, anonymous, bytes added, …)
    new_pages = sum(row[2] for row in wikis.values())
    bytes_added = sum(row[5] for row in wikis.values())
    dashboard = f"http://127.0.0.1:{run.env['DASHBOARD_PORT']}"
    with chromium_page() as page:
        page.goto(f"{dashboard}/?range=all")
        page.wait_for_function(RENDERED, timeout=60_000)
        shown = {
            label: page.locator("[data-testid=stMetric]", has_text=label)
            .locator("[data-testid=stMetricValue]")
            .inner_text()
            for label in ("New pages", "Bytes added")
        }
        crashed = page.locator("[data-testid=stException]").count()
    assert crashed == 0
    assert shown == {"New pages": f"{new_pages:,}", "Bytes added": f"{bytes_added:,}"}, shown


def test_the_broker_leading_most_typed_partitions_sigkilled(
    cluster: Cluster, record: Callable[[str], Figures]
) -> None:
    """The pipeline carries on with two brokers (every event through to PostgreSQL, none lost
    or doubled, before the third is back); ``up`` restarts it and it rejoins every ISR."""
    figures = record("C1")
    stack = cluster.stack
    typed = stack.settings.kafka.topics.typed.name
    [described], _ = asyncio.run(describe(stack, [typed]))
    leader = Counter(p["leader"] for p in described["partitions"]).most_common(1)[0][0]
    pidfile = stack.home / "run" / ("kafka.pid" if leader == 1 else f"kafka-{leader}.pid")
    pid = int(pidfile.read_text())

    run = stack.start("broker-kill", stack.fresh_events(SAMPLE), speed=PACE)
    figures["events_in"] = len(run.events)
    at_kill = stack.wait_valid(run, 60)
    killed = time.monotonic()
    kill_group(pid)

    figures["recovery_seconds"] = stack.wait_caught_up(run, killed)  # with two brokers
    code, out = status(run)
    assert code == 1 and f"broker {leader}: DOWN" in out, out
    assert re.search(r"2 broker\(s\) alive, [1-9]\d* under-replicated", kafka_line(out)), out

    output = stack.up(run)
    back = time.monotonic()
    assert re.search(rf"^kafka: started \(pid \d+\), broker {leader} at ", output, re.MULTILINE)
    assert len(re.findall(r"^kafka: running \(pid \d+\), broker \d at ", output, re.M)) == 2
    rejoined = wait_for(
        lambda: "0 under-replicated and 0 offline" in kafka_line(status(run)[1]),
        timeout=180,
        interval=1,
    )
    assert rejoined, status(run)[1]
    figures.detail("valid events before the kill", at_kill)
    figures.detail("broker killed (node id)", leader)
    figures.detail("back in every ISR after `up` (s)", round(time.monotonic() - back, 1))

    assert at_kill < len(run.events), "the kill came too late: no event flowed meanwhile"
    assert pid_alive(stack.pids(run)["worker"]), "the worker died instead of carrying on"
    delivered_exactly_once(stack, run, figures)


def test_a_spark_worker_sigkilled_with_its_executor(
    cluster: Cluster, record: Callable[[str], Figures]
) -> None:
    """The job carries on with the other worker's executor (the lost tasks run again there):
    nothing lost or doubled; ``up`` restarts the worker and the master gives the job an executor
    on it again."""
    figures = record("C2")
    stack = cluster.stack
    pid = int((stack.home / "run" / "spark-worker-1.pid").read_text())

    # A third of the pace (about 30 s of stream): the kill must land while events still flow,
    # and with every JVM of the cluster beside it the worker can be slow to get the first ones.
    run = stack.start("spark-worker-kill", stack.fresh_events(SAMPLE), speed=PACE / 3)
    figures["events_in"] = len(run.events)
    at_kill = stack.wait_valid(run, 60)
    killed = time.monotonic()
    kill_group(pid)  # the worker and the executor it launched

    figures["recovery_seconds"] = stack.wait_caught_up(run, killed)  # with one executor
    code, out = status(run)
    assert code == 1 and "DOWN: spark-worker-1" in component_line(out, "spark-cluster"), out
    assert re.search(r"^\s+worker 1: DOWN$", out, re.MULTILINE), out

    output = stack.up(run)
    back = time.monotonic()
    assert re.search(r"^spark-worker-1: started \(pid \d+\)", output, re.MULTILINE), output
    assert re.search(r"^spark-worker-2: running \(pid \d+\)", output, re.MULTILINE), output
    rejoined = wait_for(lambda: len(busy_workers(stack)) == 2, timeout=120, interval=1)
    assert rejoined, spark_cluster(stack)
    figures.detail("valid events before the kill", at_kill)
    figures.detail("executor on the new worker after `up` (s)", round(time.monotonic() - back, 1))

    assert at_kill < len(run.events), "the kill came too late: no event flowed meanwhile"
    delivered_exactly_once(stack, run, figures)
    assert status(run)[0] == 0, status(run)[1]


def worker_roles(run: Run) -> dict[str, bool | None]:
    """Each worker's pid file stem -> whether it leads (None: not answering)."""
    first = int(run.env["APP_WEB_PORT"])
    roles = {}
    for n in range(run.settings.app.workers):
        report = worker_health({**run.env, "APP_WEB_PORT": str(first + n)})
        stem = f"worker-{run.app_id}" + ("" if n == 0 else f"-{n + 1}")
        roles[stem] = None if report is None else bool(report.get("leader"))
    return roles


def test_the_leader_worker_sigkilled(cluster: Cluster, record: Callable[[str], Figures]) -> None:
    """The other worker takes the stream over (resuming after the newest event across the raw
    partitions) and the dead one's raw partitions: nothing lost or doubled; ``up`` brings the
    dead one back as a standby."""
    figures = record("C3")
    stack = cluster.stack
    run = stack.start("leader-kill", stack.fresh_events(SAMPLE), speed=PACE)
    figures["events_in"] = len(run.events)
    assert wait_for(lambda: list(worker_roles(run).values()).count(True) == 1, timeout=60)
    leader = next(stem for stem, leads in worker_roles(run).items() if leads)
    pid = int((stack.home / "run" / f"{leader}.pid").read_text())
    at_kill = stack.wait_valid(run, 60)
    killed = time.monotonic()
    kill_group(pid)

    figures["recovery_seconds"] = stack.wait_caught_up(run, killed)  # the other worker alone
    roles = worker_roles(run)
    assert roles[leader] is None and list(roles.values()).count(True) == 1, roles
    code, out = status(run)
    dead_name = "worker" if leader == f"worker-{run.app_id}" else "worker-2"
    assert code == 1 and f"DOWN: {dead_name}" in component_line(out, "worker"), out

    output = stack.up(run)
    assert re.search(rf"^{dead_name}: started \(pid \d+\)", output, re.MULTILINE), output
    back = time.monotonic()
    assert wait_for(lambda: sorted(map(str, worker_roles(run).values())) == ["False", "True"],
                    timeout=120, interval=1), worker_roles(run)  # fmt: skip
    figures.detail("valid events before the kill", at_kill)
    figures.detail(
        "both workers back, one leading, after `up` (s)", round(time.monotonic() - back, 1)
    )

    assert at_kill < len(run.events), "the kill came too late: no event flowed meanwhile"
    delivered_exactly_once(stack, run, figures)


def owned_partitions(run: Run, workers: int) -> list[list[int]]:
    """The raw partitions each of the run's first ``workers`` workers normalizes."""
    first = int(run.env["APP_WEB_PORT"])
    reports = [
        worker_health({**run.env, "APP_WEB_PORT": str(first + n)}) or {} for n in range(workers)
    ]
    return [list(report.get("raw_partitions") or []) for report in reports]


def test_a_third_worker_joins_mid_stream(
    cluster: Cluster, record: Callable[[str], Figures]
) -> None:
    """The raw partitions rebalance onto three workers while events flow; each partition's
    transactional id fences its previous owner: nothing lost or doubled."""
    figures = record("C4")
    stack = cluster.stack
    run = stack.start("worker-joins", stack.fresh_events(SAMPLE), speed=PACE)
    figures["events_in"] = len(run.events)
    at_join = stack.wait_valid(run, 60)
    joined = time.monotonic()
    output = stack.cli({**run.env, "APP_WORKERS": "3"}, "up")
    assert re.search(r"^worker-3: started \(pid \d+\)", output, re.MULTILINE), output
    assert re.search(r"^worker-2: running \(pid \d+\)", output, re.MULTILINE), output

    figures["recovery_seconds"] = stack.wait_caught_up(run, joined)
    one_each = wait_for(
        lambda: sorted(map(len, owned_partitions(run, 3))) == [1, 1, 1], timeout=60, interval=1
    )
    assert one_each, owned_partitions(run, 3)
    assert sorted(p for owned in owned_partitions(run, 3) for p in owned) == [0, 1, 2]
    figures.detail("valid events before the join", at_join)

    assert at_join < len(run.events), "the join came too late: no event flowed meanwhile"
    delivered_exactly_once(stack, run, figures)


def test_the_spark_master_sigkilled(cluster: Cluster, record: Callable[[str], Figures]) -> None:
    """The master is not on the data path: the job goes on with its executors (or `up` restarts
    it from its checkpoint); `up` restarts the master, which recovers its workers and the job
    from its recovery directory."""
    figures = record("C5")
    stack = cluster.stack
    pid = int((stack.home / "run" / "spark-master.pid").read_text())
    job = int((stack.home / "run" / "spark.pid").read_text())
    run = stack.start("master-kill", stack.fresh_events(SAMPLE), speed=PACE)
    figures["events_in"] = len(run.events)
    at_kill = stack.wait_valid(run, 60)
    killed = time.monotonic()
    kill_group(pid)

    code, out = status(run)
    assert code == 1 and "DOWN: spark-master" in component_line(out, "spark-cluster"), out
    output = stack.up(run)
    assert re.search(r"^spark-master: started \(pid \d+\)", output, re.MULTILINE), output
    figures["recovery_seconds"] = stack.wait_caught_up(run, killed)
    # The new master recovers the workers and the job (its recovery directory), so the job
    # keeps its executors: it runs on both workers again.
    recovered = wait_for(
        lambda: (
            [a["state"] for a in spark_cluster(stack)["activeapps"]] == ["RUNNING"]
            and len(busy_workers(stack)) == 2
        ),
        timeout=120,
        interval=1,
    )
    assert recovered, spark_cluster(stack)
    survived = pid_alive(job)
    figures.detail("valid events before the kill", at_kill)
    figures.detail("the job survived (else `up` restarted it)", survived)

    assert at_kill < len(run.events), "the kill came too late: no event flowed meanwhile"
    delivered_exactly_once(stack, run, figures)


def test_a_rolling_restart_of_the_three_brokers(
    cluster: Cluster, record: Callable[[str], Figures]
) -> None:
    """Each broker stopped and started in turn, as an upgrade does, while events flow: the
    others carry every partition meanwhile."""
    figures = record("C6")
    stack = cluster.stack
    # A twentieth of the pace: the stream (about four minutes) outlasts the three restarts,
    # which take two to three minutes on a loaded machine (the suite's other stacks beside).
    run = stack.start("rolling-restart", stack.fresh_events(SAMPLE), speed=PACE / 20)
    figures["events_in"] = len(run.events)
    figures.detail("valid events before the first stop", stack.wait_valid(run, 10))
    started = time.monotonic()
    for node in range(1, BROKERS + 1):
        pidfile = stack.home / "run" / ("kafka.pid" if node == 1 else f"kafka-{node}.pid")
        pid = int(pidfile.read_text())
        os.killpg(pid, signal.SIGTERM)  # a clean stop: leadership moves first
        assert wait_for(lambda pid=pid: not pid_alive(pid), timeout=90), f"broker {node}"
        output = stack.up(run)
        assert re.search(rf"^kafka: started \(pid \d+\), broker {node} at ", output, re.M)
        in_sync = wait_for(
            lambda: "0 under-replicated and 0 offline" in kafka_line(status(run)[1]),
            timeout=180,
            interval=1,
        )
        assert in_sync, status(run)[1]
    figures.detail("three brokers restarted in (s)", round(time.monotonic() - started, 1))
    valid_during = stack.outcomes(run)["valid"]
    figures["recovery_seconds"] = stack.wait_caught_up(run, time.monotonic())
    figures.detail("valid events when the last broker was back", valid_during)

    assert valid_during < len(run.events), "the stream ended before the restarts did"
    delivered_exactly_once(stack, run, figures)
