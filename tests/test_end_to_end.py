"""The whole pipeline with one command, as a user runs it.

``./infra/wikipulse up --replay FILE --once --speed max --replay-option=--drop-every=N`` on a
home and ports of its own (a second Kafka and PostgreSQL next to the session's): a replay server
serves a recording of 384 synthetic events (tests/events.py) over SSE, cutting the connection
abruptly every N frames; the worker resumes each time and writes them to Kafka; the Spark job
aggregates them into PostgreSQL. The tables must then hold exactly what plain Python computes
from the same file (tests/spark/helpers.golden), the dashboard in Chromium must name the top
contributor, and the command's lifecycle must hold: status (replay, freshness), a second ``up``
that changes nothing, a SIGKILLed worker that ``up`` brings back alone and in replay mode (a
SIGKILLed broker: the fault suite), each time with every event once in the raw and typed topics
and the tables equal to the golden values once the Spark job has read the typed topic to its
end, ``up --replay`` without a file switching to the endless synthetic stream, which a SIGKILLed
replay server brought back by ``up`` goes on with, and ``down`` that stops the replay server
too.

The tests of this module share one stack and run in order; each waits for what it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.config import Settings, load_settings
from app.config.names import normalizer_group
from infra.lag import consumer_lag, status_lines
from infra.processes import pid_alive, wait_for
from infra.replay.synthetic import StreamOptions, SyntheticStream
from tests.conftest import make_home
from tests.dashboards.browser import RENDERED, chromium_page
from tests.events import synthetic
from tests.harness import (
    ReplayStack,
    cli_environment,
    cli_pids,
    read_topic,
    run_cli,
    status_line,
    worker_connected,
)
from tests.spark.helpers import golden, query, user_edit_counts, wiki_activity

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The recording the stack replays: 384 synthetic events from a June morning, of a seed whose
#: top contributor leads clearly (a name in Cyrillic and Latin letters).
RAW_LINES = tuple(synthetic(384, seed=31, start=datetime(2026, 6, 15, 9, 59, 40, tzinfo=UTC)))
#: The replay server aborts the TCP connection after this many frames, again and again.
DROP_EVERY = 25
#: Each event of the recording once: what the typed topic must hold, by event id.
EVENT_IDS = Counter(json.loads(line)["meta"]["id"] for line in RAW_LINES)
#: The worker's pid file is named by its app id (the default one here).
WORKER = "worker-wikipulse-worker"


@pytest.fixture(scope="module")
def replay_stack() -> Iterator[ReplayStack]:
    home = make_home("wikipulse-e2e-")
    events_file = recording(home)
    events_file.write_bytes(b"".join(line + b"\n" for line in RAW_LINES))
    env = cli_environment(
        home,
        INGESTION_WIKIMEDIA_FILTERS_NAMESPACES="[]",  # every namespace: all 384 events count
        INGESTION_BACKOFF_INITIAL="100 ms",  # reconnect quickly after each drop
        INGESTION_BACKOFF_MAX="1 second",
        # The recording is served once, then the stream is silent: the worker that received it
        # stays healthy however long a loaded machine takes to start the rest.
        INGESTION_HEALTH_TIMEOUT="1 hour",
        SPARK_TRIGGER_PROCESSING_TIME="2 seconds",
        POSTGRES_RETENTION_DAYS="100000",  # the recorded events are from June 2026
    )
    try:
        first = run_cli(
            env,
            "up",
            "--replay",
            str(events_file),
            "--once",
            "--speed",
            "max",
            f"--replay-option=--drop-every={DROP_EVERY}",
        )
        assert first.returncode == 0, first.stdout + first.stderr
        yield ReplayStack(env, home, load_settings(environ=env), first.stdout)
    finally:
        run_cli(env, "down", "--purge", timeout=120)
        shutil.rmtree(home, ignore_errors=True)
        events_file.unlink(missing_ok=True)


def recording(home: Path) -> Path:
    """Where the stack's recording is kept: beside its home (which `down --purge` deletes)."""
    return home.parent / f"{home.name}-events.ndjson"


def expected_tables(settings: Settings) -> tuple[dict, dict]:
    return golden(RAW_LINES, window=settings.spark.windowing.duration)


def total_events(settings: Settings) -> int:
    return int(query(settings, "SELECT coalesce(sum(events), 0) FROM wiki_activity")[0][0])


def wait_for_all_events(stack: ReplayStack) -> None:
    expected = sum(row[-1] for row in expected_tables(stack.settings)[1].values())
    assert expected == len(RAW_LINES)
    if not wait_for(lambda: total_events(stack.settings) >= expected, timeout=180, interval=1):
        logs = stack.run("logs", "worker", "--no-follow", "-n", "40")[1]
        raise AssertionError(
            f"{total_events(stack.settings)} of {expected} events aggregated; worker log:\n{logs}"
        )


def freshness_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith("freshness:"))


def test_up_starts_everything_in_replay_mode_and_says_what_next(replay_stack: ReplayStack) -> None:
    out = replay_stack.first_up
    url = replay_stack.replay_url
    for component in ("postgres", "kafka", "replay", "worker", "spark", "dashboard"):
        assert f"{component}: started" in out, out
    assert f"at {url}" in out and "worker: started" in out and f"following {url}" in out
    assert "(384 events), once as fast as possible, then silent" in out
    assert f"--drop-every={DROP_EVERY}" in out
    dashboard = f"http://127.0.0.1:{replay_stack.env['DASHBOARD_PORT']}"
    worker = f"http://127.0.0.1:{replay_stack.env['APP_WEB_PORT']}"
    assert f"dashboard: {dashboard}" in out and f"worker metrics: {worker}/metrics" in out
    for step in ("status", "logs spark", "logs replay", "up --live", "down"):
        assert f"./infra/wikipulse {step} " in out, out
    started = cli_pids(replay_stack.home)
    assert set(started) == {"postgres", "kafka", "replay", "worker", "spark", "dashboard"}
    assert all(pid_alive(pid) for pid in started.values())
    with urllib.request.urlopen(f"{dashboard}/_stcore/health", timeout=10) as response:
        assert response.read() == b"ok"

    # A second `up` is harmless: same mode, nothing restarted.
    code, second, err = replay_stack.run("up")
    assert code == 0, err
    assert "replay mode, kept from an earlier `up --replay`" in second
    for component in ("postgres", "kafka", "replay", "worker", "spark", "dashboard"):
        assert f"{component}: running" in second, second
    assert cli_pids(replay_stack.home) == started


def test_status_shows_the_replay_and_the_freshness(replay_stack: ReplayStack) -> None:
    code, out, _ = replay_stack.run("status")
    assert code == 0, out
    replay = status_line(out, "replay")
    assert replay.split()[0] == "up" and replay_stack.replay_url.split("/v2")[0] in replay
    assert f"serving {recording(replay_stack.home)} (384 events)" in replay
    assert "healthy, connected=True" in status_line(out, "worker")
    assert "database wiki_streaming, schema" in status_line(out, "postgres")
    assert "topics ready" in status_line(out, "kafka")
    assert "the worker's lag is" in freshness_line(out)

    log = replay_stack.run("logs", "replay", "--no-follow", "-n", "100000")[1]
    assert f"serving {len(RAW_LINES)} events at {replay_stack.replay_url}" in log
    assert "dropping the connection after 25 frames" in log


def test_the_tables_equal_values_computed_from_the_file(replay_stack: ReplayStack) -> None:
    wait_for_all_events(replay_stack)
    expected_users, expected_wikis = expected_tables(replay_stack.settings)
    assert user_edit_counts(replay_stack.settings) == expected_users
    assert wiki_activity(replay_stack.settings) == expected_wikis

    # The connection really was cut, and the worker resumed each time.
    log = replay_stack.run("logs", "replay", "--no-follow", "-n", "100000")[1]
    assert log.count("dropping the connection") >= len(RAW_LINES) // DROP_EVERY

    # status: how old the newest aggregated event is (the recording's newest event time).
    newest = max(datetime.fromtimestamp(json.loads(raw)["timestamp"], UTC) for raw in RAW_LINES)
    line = freshness_line(replay_stack.run("status")[1])
    assert "the newest event in PostgreSQL is " in line, line
    assert f"({newest:%Y-%m-%d %H:%M:%S} UTC)" in line, line


def test_the_dashboard_shows_the_top_contributor(replay_stack: ReplayStack) -> None:

    wait_for_all_events(replay_stack)
    totals: Counter[str] = Counter()
    for (_, user), (_, count) in expected_tables(replay_stack.settings)[0].items():
        totals[user] += count
    (leader, most), (_, runner_up) = totals.most_common(2)
    assert most > runner_up, "the recording has one clear top contributor"

    dashboard = f"http://127.0.0.1:{replay_stack.env['DASHBOARD_PORT']}"
    with chromium_page() as page:
        page.goto(f"{dashboard}/?range=all")  # everything retained: June 2026 included
        page.wait_for_function(RENDERED, timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0
        top = page.locator(".st-key-top_contributor").inner_text()
        assert f"Most edits: {leader} ({most})" in top, top


def test_a_killed_worker_comes_back_alone_in_replay_mode(replay_stack: ReplayStack) -> None:
    before = cli_pids(replay_stack.home)
    normalizers = normalizer_members(replay_stack)
    assert normalizers, "the worker's normalizer has joined its group"
    os.killpg(before["worker"], signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(before["worker"]), timeout=20)
    code, out, _ = replay_stack.run("status")
    assert code == 1
    assert status_line(out, "worker").split()[0] == "DOWN"
    assert status_line(out, "replay").split()[0] == "up"

    code, out, err = replay_stack.run("up")
    assert code == 0, err
    assert "replay mode, kept from an earlier `up --replay`" in out
    assert f"replay: running (pid {before['replay']})" in out
    restarted = next(line for line in out.splitlines() if line.startswith("worker: "))
    assert restarted.startswith("worker: started") and replay_stack.replay_url in restarted
    after = cli_pids(replay_stack.home)
    assert after["worker"] != before["worker"] and pid_alive(after["worker"])
    assert {k: v for k, v in after.items() if k != "worker"} == {
        k: v for k, v in before.items() if k != "worker"
    }
    source = json.loads((replay_stack.home / "run" / f"{WORKER}.source.json").read_text())
    assert source == {"url": replay_stack.replay_url, "replay": True}

    # Once Kafka has dropped the dead worker from its groups (about a minute), the new one
    # connects to the replay server again and its normalizer takes the raw log over: from then
    # on, whatever the new worker writes is in the topics.
    assert wait_for(lambda: worker_connected(replay_stack), timeout=150, interval=1), (
        replay_stack.run("logs", "worker", "--no-follow", "-n", "40")[1]
    )
    taken_over = wait_for(
        lambda: normalizer_took_over(replay_stack, normalizers), timeout=150, interval=1
    )
    assert taken_over, f"the normalizer group still has {normalizer_members(replay_stack)}"
    assert_each_event_once(replay_stack)


def normalizer_members(stack: ReplayStack) -> frozenset[str] | None:
    """The member ids of the worker's normalizer group (consumer group over the raw topic)
    when it is stable; None while it rebalances."""

    async def describe() -> tuple[str, frozenset[str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka.bootstrap_servers)
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([normalizer_group(stack.settings)])
        finally:
            await admin.close()
        [(error, _, state, _, _, members, *_)] = response.groups
        assert error == 0, f"describing the normalizer group: error code {error}"
        return state, frozenset(member[0] for member in members)

    state, members = asyncio.run(describe())
    return members if state == "Stable" else None


def normalizer_took_over(stack: ReplayStack, killed: frozenset[str]) -> bool:
    """Whether the normalizer group is stable with members, none of them the killed worker's."""
    members = normalizer_members(stack)
    return bool(members) and not members & killed


def typed_event_ids(stack: ReplayStack) -> Counter[str]:
    """Every event id in the typed topic, read as the Spark job reads it (read_committed), with
    its number of records."""
    typed = stack.settings.kafka.topics.typed
    records = asyncio.run(read_topic(stack.settings, typed.name, typed.partitions))
    return Counter(json.loads(record.value)["event_id"] for record in records)


def readers_caught_up(stack: ReplayStack) -> bool:
    """Whether the normalizer (its committed offsets) and the Spark job (its checkpoint's newest
    committed batch) have both read their topic to its end."""
    return all(
        lag.known and lag.positioned and lag.total == 0 for lag in consumer_lag(stack.settings)
    )


def assert_each_event_once(stack: ReplayStack) -> None:
    """Nothing lost, nothing doubled. Once the normalizer has committed the whole raw log and the
    Spark job has committed a batch up to the typed topic's end: each position of the recording
    once in the raw topic, each event once in the typed topic, and the tables equal to the
    values computed from the file."""
    if not wait_for(lambda: readers_caught_up(stack), timeout=120, interval=1):
        raise AssertionError("\n".join(status_lines(consumer_lag(stack.settings))))
    positions = sorted(sse_position(record) for record in raw_records(stack))
    assert positions == list(range(len(RAW_LINES))), Counter(positions).most_common(3)
    assert typed_event_ids(stack) == EVENT_IDS
    expected_users, expected_wikis = expected_tables(stack.settings)
    assert user_edit_counts(stack.settings) == expected_users
    assert wiki_activity(stack.settings) == expected_wikis


def raw_records(stack: ReplayStack) -> list[Any]:
    raw = stack.settings.kafka.topics.raw
    return asyncio.run(read_topic(stack.settings, raw.name, raw.partitions))


def sse_position(record: Any) -> int:
    """The stream position of a raw record: its SSE id's eqiad offset."""
    sse_id = json.loads(dict(record.headers)["sse-id"])
    return int(next(e["offset"] for e in sse_id if e["topic"] == "eqiad.mediawiki.recentchange"))


def test_replay_without_a_file_serves_the_synthetic_stream_across_restarts(
    replay_stack: ReplayStack,
) -> None:
    before = cli_pids(replay_stack.home)
    code, out, err = replay_stack.run("up", "--replay")
    assert code == 0, err
    assert f"replay: stopped (it served {recording(replay_stack.home)}" in out, out
    mode = json.loads((replay_stack.home / "replay.json").read_text())
    assert mode["file"] is None and isinstance(mode["seed"], int)
    served = f"synthetic stream (seed {mode['seed']}), live pace"
    assert f"replay: started (pid {cli_pids(replay_stack.home)['replay']}), {served}, at " in out
    assert replay_stack.replay_url in out, "the same port: the worker's URL stays"
    assert cli_pids(replay_stack.home)["worker"] == before["worker"]
    assert f"serving {served}" in status_line(replay_stack.run("status")[1], "replay")

    # What the worker must receive: the generator's events of that seed from that origin (the
    # serve command's defaults are StreamOptions' own), from the position after the file's last.
    stream = SyntheticStream(
        StreamOptions(seed=mode["seed"], start=datetime.fromisoformat(mode["origin"]))
    )
    first = len(RAW_LINES)  # the recording's positions come before

    def synthetic_records() -> list[Any]:
        return [r for r in raw_records(replay_stack) if sse_position(r) >= first]

    def received_up_to(position: int) -> bool:
        return max((sse_position(r) for r in synthetic_records()), default=-1) >= position

    # Each synthetic event comes when its time comes: wait for a hundred of them.
    assert wait_for(lambda: received_up_to(first + 100), timeout=120, interval=2)
    killed = cli_pids(replay_stack.home)["replay"]
    os.killpg(killed, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(killed), timeout=20)
    code, out, err = replay_stack.run("up")
    assert code == 0, err
    assert f"replay: started (pid {cli_pids(replay_stack.home)['replay']}), {served}" in out
    assert json.loads((replay_stack.home / "replay.json").read_text()) == mode

    # The worker resumes on the restarted server (Last-Event-ID) and gets the same stream on:
    # what it missed meanwhile, then the events after the restart, none lost, none twice.
    after_restart = stream.position_at(datetime.now(UTC)) + 80
    assert wait_for(lambda: received_up_to(after_restart), timeout=120, interval=2), (
        replay_stack.run("logs", "worker", "--no-follow", "-n", "40")[1]
    )
    synthetic_part = synthetic_records()
    positions = [sse_position(record) for record in synthetic_part]
    assert positions == list(range(first, first + len(positions)))
    assert [r.value for r in synthetic_part] == list(stream.events(len(positions), first=first))


def test_down_stops_the_replay_server_too(replay_stack: ReplayStack) -> None:
    running = cli_pids(replay_stack.home)
    code, out, err = replay_stack.run("down")
    assert code == 0, err
    assert "replay: stopped" in out
    assert wait_for(lambda: not any(pid_alive(pid) for pid in running.values()), timeout=30)
    code, out, _ = replay_stack.run("status")
    assert code == 1
    assert "not running" in status_line(out, "replay")  # the mode is kept for the next `up`

    code, _, err = replay_stack.run("down", "--purge")
    assert code == 0, err
    assert not replay_stack.home.exists()
