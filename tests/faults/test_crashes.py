"""Crashes of the pipeline's processes while events flow: the worker, the Kafka broker and the
Spark driver SIGKILLed, PostgreSQL stopped. After each, ``./infra/wikipulse up`` (what a user
runs) brings back what is missing, and the pipeline must end exactly where it would have
without the fault: each event once in the typed topic, the aggregates equal to the golden
values.
"""

from __future__ import annotations

import random
import time
import urllib.request
from collections.abc import Callable

import pytest

from infra.processes import pid_alive
from infra.replay.server import ReplayOptions
from tests.dashboards.browser import RENDERED, chromium_page
from tests.faults.pipeline import (
    PACE,
    SAMPLE,
    FaultStack,
    Run,
    group_pids,
    kill_group,
    rss_mb,
    wait_seconds,
)
from tests.faults.results import Figures
from tests.harness import ReplayThread, run_cli

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

KAFKA_DOWN_SECONDS = 20.0
POSTGRES_DOWN_SECONDS = 30.0
SPARK_KILLS = 3
#: The seed of the moments the Spark driver is killed (seconds after it started).
SPARK_KILL_SEED = 20261128
SPARK_KILL_DELAY = (0.5, 6.0)
#: What the dashboard says while PostgreSQL is away (dashboards/wikipulse_dashboard.py).
OUTAGE = "The database is not available"


def test_worker_sigkilled_mid_stream_resumes_from_the_raw_log(
    faults: FaultStack, record: Callable[[str], Figures]
) -> None:
    figures = record("2")
    events = faults.fresh_events(SAMPLE)
    figures["events_in"] = len(events)
    with ReplayThread(events, ReplayOptions(speed=PACE, hold_open=True)) as replay:
        run = faults.start("worker-kill", events, live_url=replay.url)
        before = faults.pids(run)
        at_kill = faults.wait_valid(run, 100)
        kill_group(before["worker"])
        killed_at = time.monotonic()
        requests_before = len(replay.server.requests)
        durable = faults.raw_resume_point(run)  # what the successor must resume after
        assert at_kill < len(events), "the kill came too late to be mid-stream"

        output = faults.up(run)
        fault_end = time.monotonic()
        after = faults.pids(run)
        assert "worker: started" in output, output
        assert after["worker"] != before["worker"] and pid_alive(after["worker"])
        figures["recovery_seconds"] = faults.wait_caught_up(run, fault_end)
        resumed = replay.server.requests[requests_before:]
        most_concurrent = replay.server.max_active
    delivery = faults.delivery(run)
    figures.update(delivery.figures)
    figures.detail("valid events before the kill", at_kill)
    figures.detail("`up` after the kill took (s)", round(fault_end - killed_at, 1))
    figures.detail("Last-Event-ID of the first reconnect = the raw log's resume point",
                   bool(resumed) and resumed[0][0] == durable)  # fmt: skip
    figures.detail("worker RSS after (MiB)", rss_mb([after["worker"]]))

    assert durable is not None
    assert resumed, "the new worker never connected to the stream"
    assert resumed[0][0] == durable, (resumed[0], durable)
    assert most_concurrent <= 1, "more than one SSE connection at a time"
    assert (delivery.lost, delivery.doubled, delivery.dead_lettered) == (0, 0, 0), delivery
    assert delivery.typed_out == len(events)
    assert delivery.raw_records == len(events) and delivery.raw_doubled == 0, delivery


def test_kafka_broker_sigkilled_for_20_s(
    faults: FaultStack, record: Callable[[str], Figures]
) -> None:
    figures = record("3")
    # A third of the pace (about 30 s): on a loaded machine the whole stream was once through
    # before the kill, as in cluster fault C2.
    run = faults.start("kafka-kill", faults.fresh_events(SAMPLE), speed=PACE / 3)
    figures["events_in"] = len(run.events)
    before = faults.pids(run)
    at_kill = faults.wait_valid(run, 60)
    kill_group(before["kafka"])
    back_at = time.monotonic() + KAFKA_DOWN_SECONDS
    # `status` says so, and fails.
    outage = run_cli(run.env, "status")
    kafka = next(line for line in outage.stdout.splitlines() if " kafka " in line)
    assert outage.returncode == 1 and kafka.split()[0] == "DOWN" and "not running" in kafka
    wait_seconds(back_at)
    survived = {name: pid_alive(before[name]) for name in ("worker", "spark")}

    output = faults.up(run)
    fault_end = time.monotonic()
    after = faults.pids(run)
    assert "kafka: started" in output and after["kafka"] != before["kafka"], output
    # `up` started the broker alone.
    for name in ("replay", "worker", "dashboard"):
        assert after[name] == before[name], (name, output)
    heals = Heal(faults, run)
    figures["recovery_seconds"] = faults.wait_caught_up(run, fault_end, heal=heals)
    delivery = faults.delivery(run)
    figures.update(delivery.figures)
    after = faults.pids(run)
    figures.detail("valid events before the kill", at_kill)
    figures.detail("alive at the end of the outage", survived)
    figures.detail("Spark job restarted", after["spark"] != before["spark"])
    figures.detail("extra `up` runs needed", heals.count)
    figures.detail("worker reconnects by reason", faults.reconnects(run))
    figures.detail("worker RSS after (MiB)", rss_mb([after["worker"]]))

    assert at_kill < len(run.events), "the kill came too late: no event flowed meanwhile"
    assert after["worker"] == before["worker"], "the worker died instead of retrying"
    assert (delivery.lost, delivery.doubled, delivery.dead_lettered) == (0, 0, 0), delivery
    assert delivery.typed_out == len(run.events)
    assert delivery.raw_doubled == 0, delivery


def test_spark_driver_sigkilled_three_times(
    faults: FaultStack, record: Callable[[str], Figures]
) -> None:
    """Three rounds: a third of the events flows, the driver is SIGKILLed at a seeded-random
    moment, ``up`` restarts the job, and the aggregates must then equal the golden values of
    every event sent so far."""
    figures = record("4")
    rng = random.Random(SPARK_KILL_SEED)
    events = faults.fresh_events(SAMPLE)
    figures["events_in"] = len(events)
    third = len(events) // SPARK_KILLS
    run = faults.start("spark-kill", events, serve=events[:third], speed=PACE)
    moments, restarts, recoveries = [], [], []
    for round_number in range(1, SPARK_KILLS + 1):
        if round_number > 1:  # the next third flows (the worker resumes where it was)
            run = faults.serve(run, events[: third * round_number], speed=PACE)
        pid = faults.pids(run)["spark"]
        delay = round(rng.uniform(*SPARK_KILL_DELAY), 1)
        wait_seconds(time.monotonic() + delay)  # a random moment of the job's life
        moments.append(delay)
        kill_group(pid)
        started = time.monotonic()
        output = faults.up(run)
        fault_end = time.monotonic()
        restarts.append(round(fault_end - started, 1))
        assert "spark: started" in output, output
        recoveries.append(faults.wait_caught_up(run, fault_end))
    figures["recovery_seconds"] = max(recoveries)
    delivery = faults.delivery(run)
    figures.update(delivery.figures)
    spark = faults.pids(run)["spark"]
    figures.detail("seed", SPARK_KILL_SEED)
    figures.detail("kills, seconds after a third of the events began to flow", moments)
    figures.detail("`up` restarting the job took (s)", restarts)
    figures.detail("aggregates equal to the golden values after each restart within (s)",
                   recoveries)  # fmt: skip
    figures.detail("Spark driver RSS after (MiB)", rss_mb(group_pids(spark)))

    assert len(run.events) == len(events)
    assert (delivery.lost, delivery.doubled, delivery.dead_lettered) == (0, 0, 0), delivery
    assert delivery.typed_out == len(events)
    assert faults.aggregates(run) == run.expected()


def test_postgresql_stopped_for_30_s(faults: FaultStack, record: Callable[[str], Figures]) -> None:
    figures = record("5")
    run = faults.start("postgres-stop", faults.fresh_events(SAMPLE), speed=PACE)
    figures["events_in"] = len(run.events)
    before = faults.pids(run)
    at_stop = faults.wait_valid(run, 60)
    dashboard = f"http://127.0.0.1:{run.env['DASHBOARD_PORT']}"
    heals = Heal(faults, run)
    # Playwright's synchronous API runs an event loop: nothing in this block may use asyncio.
    with chromium_page() as page:
        faults.cli(run.env, "down", "postgres")
        stopped = time.monotonic()

        # Meanwhile the served dashboard says so, in the browser, and keeps serving.
        page.goto(f"{dashboard}/?range=all")
        outage = page.locator("[data-testid=stAlert]", has_text=OUTAGE)
        outage.wait_for(state="visible", timeout=20_000)
        said = outage.inner_text()
        crashed = page.locator("[data-testid=stException]").count()
        with urllib.request.urlopen(f"{dashboard}/_stcore/health", timeout=10) as response:
            serving = response.read() == b"ok"
        wait_seconds(stopped + POSTGRES_DOWN_SECONDS)
        survived = pid_alive(before["spark"])

        output = faults.up(run)
        fault_end = time.monotonic()
        assert "postgres: started" in output, output
        figures["recovery_seconds"] = faults.wait_caught_up(run, fault_end, heal=heals)
        # The same page, never reloaded, comes back by itself.
        page.wait_for_function(RENDERED, timeout=120_000)
        outage_after = outage.count()
        crashed_after = page.locator("[data-testid=stException]").count()
    delivery = faults.delivery(run)
    figures.update(delivery.figures)
    after = faults.pids(run)
    figures.detail("valid events before the stop", at_stop)
    figures.detail("Spark job alive when PostgreSQL came back", survived)
    figures.detail("Spark job restarted", after["spark"] != before["spark"])
    figures.detail("extra `up` runs needed", heals.count)
    figures.detail("dashboard in Chromium during the outage", said.split(".")[0])

    assert at_stop < len(run.events), "the stop came too late: no event flowed meanwhile"
    assert said.startswith(OUTAGE) and crashed == 0, said
    assert serving and after["dashboard"] == before["dashboard"]
    assert outage_after == 0 and crashed_after == 0
    assert (delivery.lost, delivery.doubled, delivery.dead_lettered) == (0, 0, 0), delivery
    assert delivery.typed_out == len(run.events)


class Heal:
    """``up`` again when the worker or the Spark job has died since (what a user would do),
    counted."""

    def __init__(self, faults: FaultStack, run: Run) -> None:
        self.faults = faults
        self.run = run
        self.count = 0

    def __call__(self) -> None:
        pids = self.faults.pids(self.run)
        if all(name in pids and pid_alive(pids[name]) for name in ("worker", "spark")):
            return
        self.count += 1
        self.faults.up(self.run)
