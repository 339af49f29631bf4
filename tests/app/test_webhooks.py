"""The worker's webhook dispatcher (app/alerts) against a real PostgreSQL (a migrated scratch
database) and a real HTTP receiver on loopback: retried on 500 with the same idempotency key,
delivered once, never again; two dispatchers at once deliver once; Slack's form; what `status`
says. The alerts and their outbox rows are written by hand, as the Spark job's step writes
them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import pytest
from aiohttp import web

from app.alerts.store import delivery_summary
from app.alerts.webhooks import WebhookDispatcher
from app.config import Settings
from app.config.clients import libpq_params
from app.metrics import WorkerMetrics
from infra.processes import free_port
from tests.harness import WorkerProcess, pipeline_environment, worker_metrics
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import query

pytestmark = pytest.mark.integration

START = datetime(2026, 7, 1, 18, 4, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@dataclass
class Receiver:
    """A webhook receiver: answers the statuses queued in ``answers`` (then 200), keeps every
    request's headers and body."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), orjson.loads(await request.read())))
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="busy, try later" if status >= 500 else "ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hook.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield hook
    finally:
        await runner.cleanup()


def settings_for(job_settings: JobSettings, receiver: Receiver, **overrides: str) -> Settings:
    return job_settings(
        ALERTS_WEBHOOKS_URLS=f'["{receiver.url}"]',
        ALERTS_WEBHOOKS_BACKOFF_INITIAL="50 ms",
        ALERTS_WEBHOOKS_BACKOFF_MAX="100 ms",
        **overrides,
    )


def surge(db: Settings, *, later: timedelta = timedelta(0)) -> int:
    """nlwiki's surge from 18:04 (+ ``later``) to 18:07, 96 edits in its newest minute against
    20 usual."""
    ((alert,),) = query(
        db,
        "INSERT INTO alerts (kind, wiki, window_start, window_end, detected_window_end, observed, "
        "expected, deviation, score) VALUES ('wiki_surge', 'nlwiki', %s, %s, %s, 96, 20, 4.5, "
        "16.9) RETURNING id",
        (START + later, START + later + 3 * MINUTE, START + later + MINUTE),
    )
    return int(alert)


def notify(db: Settings, alert: int, event: str, url: str) -> None:
    ((notification,),) = query(
        db, "INSERT INTO alert_notifications (alert_id, event) VALUES (%s, %s) RETURNING id",
        (alert, event),
    )  # fmt: skip
    query(db, "INSERT INTO alert_deliveries (notification_id, url) VALUES (%s, %s)",
          (notification, url))  # fmt: skip


async def rounds(dispatcher: WebhookDispatcher, count: int) -> None:
    for _ in range(count):
        await dispatcher.run_once()
        await asyncio.sleep(0.12)  # past the longest backoff


def counter(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def summary_lines(db: Settings) -> list[str]:
    connection = psycopg2.connect(**libpq_params(db.postgres))
    try:
        with connection, connection.cursor() as cursor:
            return delivery_summary(cursor).lines()
    finally:
        connection.close()


async def test_a_delivery_is_retried_on_500_and_delivered_once(
    job_settings: JobSettings, receiver: Receiver
) -> None:
    db = settings_for(job_settings, receiver)
    metrics = WorkerMetrics()
    dispatcher = WebhookDispatcher(db, metrics)
    await dispatcher.run_once()  # a new dispatcher counts notifications from now on

    alert = surge(db)
    notify(db, alert, "opened", receiver.url)
    receiver.answers = [500, 500]
    await dispatcher.run_once()
    assert summary_lines(db) == [
        "alerts: 1 open (1 wiki_surge)",
        f"webhooks: 0 delivered, 1 pending, 1 failing (last error, {receiver.url}: "
        "HTTP 500: busy, try later)",
    ]
    await rounds(dispatcher, 5)

    assert len(receiver.requests) == 3  # 500, 500, 200: then never again
    keys = {headers["Idempotency-Key"] for headers, _ in receiver.requests}
    bodies = [body for _, body in receiver.requests]
    assert len(keys) == 1 and bodies[0] == bodies[1] == bodies[2]
    (opened_key,) = keys
    assert bodies[0] == {
        "idempotency_key": opened_key,
        "event": "opened",
        "kind": "wiki_surge",
        "wiki": "nlwiki",
        "namespace": None,
        "title": None,
        "url": None,
        "window_start": "2026-07-01T18:04:00+00:00",
        "window_end": "2026-07-01T18:07:00+00:00",
        "detected_window_end": "2026-07-01T18:05:00+00:00",
        "observed": 96.0,
        "expected": 20.0,
        "score": 16.9,
        "opened_at": bodies[0]["opened_at"],  # the wall clock of the insert
        "closed_at": None,
        "summary": "nlwiki is surging since 2026-07-01 18:04 UTC: 96 edits a minute, 20 usual "
        "(score 16.9)",
    }
    assert query(db, "SELECT attempts, last_status, delivered_at IS NOT NULL "
                     "FROM alert_deliveries") == [(3, 200, True)]  # fmt: skip
    assert counter(metrics, "wikipulse_webhook_deliveries_total", kind="wiki_surge",
                   outcome="failed") == 2  # fmt: skip
    assert counter(metrics, "wikipulse_webhook_deliveries_total", kind="wiki_surge",
                   outcome="delivered") == 1  # fmt: skip
    assert counter(metrics, "wikipulse_alerts_total", kind="wiki_surge", event="opened") == 1

    # The episode ends: its closing, under a key of its own.
    query(db, "UPDATE alerts SET closed_at = now() WHERE id = %s", (alert,))
    notify(db, alert, "closed", receiver.url)
    await rounds(dispatcher, 3)
    assert len(receiver.requests) == 4
    headers, body = receiver.requests[-1]
    assert body["event"] == "closed"
    assert headers["Idempotency-Key"] == body["idempotency_key"] != opened_key
    assert body["summary"] == "Over: nlwiki is surging (from 2026-07-01 18:04 UTC to 18:07 UTC)"
    assert counter(metrics, "wikipulse_alerts_total", kind="wiki_surge", event="closed") == 1
    assert summary_lines(db)[1] == "webhooks: 2 delivered, 0 pending, 0 failing"


async def test_two_dispatchers_at_once_deliver_once(
    job_settings: JobSettings, receiver: Receiver
) -> None:
    """A leader and its successor overlapping (or a v1 and a v2 worker during a migration):
    the claim's lock and lease give each delivery to one of them."""
    db = settings_for(job_settings, receiver)
    for hour in range(3):
        notify(db, surge(db, later=timedelta(hours=hour)), "opened", receiver.url)
    first, second = WebhookDispatcher(db, WorkerMetrics()), WebhookDispatcher(db, WorkerMetrics())
    attempted = await asyncio.gather(first.run_once(), second.run_once())
    await asyncio.gather(rounds(first, 2), rounds(second, 2))
    assert sum(attempted) == 3
    assert len(receiver.requests) == 3
    assert len({headers["Idempotency-Key"] for headers, _ in receiver.requests}) == 3


async def test_the_slack_form_and_a_url_no_longer_configured(
    job_settings: JobSettings, receiver: Receiver
) -> None:
    db = settings_for(job_settings, receiver, ALERTS_WEBHOOKS_FORMAT="slack")
    ((alert,),) = query(
        db,
        "INSERT INTO alerts (kind, wiki, namespace, title, server_name, window_start, window_end, "
        "detected_window_end, observed, expected, score) VALUES ('page_trending', 'fywiki', 0, "
        "'Tulp fan Ljouwert', 'fy.wikipedia.org', %s, %s, %s, 6, 0.01, 23.75) RETURNING id",
        (START, START + 4 * MINUTE, START + 3 * MINUTE),
    )
    notify(db, alert, "opened", receiver.url)
    notify(db, alert, "closed", "http://127.0.0.1:9/removed-since")  # not in the settings
    await rounds(WebhookDispatcher(db, WorkerMetrics()), 2)
    assert [body for _, body in receiver.requests] == [{
        "text": "Tulp fan Ljouwert on fywiki is trending since 2026-07-01 18:04 UTC: 6 edits in "
        "its horizon, 0.01 expected (score 23.8) "
        "https://fy.wikipedia.org/wiki/Tulp_fan_Ljouwert"
    }]  # fmt: skip
    assert query(db, "SELECT url, attempts FROM alert_deliveries WHERE delivered_at IS NULL") == [
        ("http://127.0.0.1:9/removed-since", 0)
    ]


async def test_postgresql_out_of_reach_skips_the_round(job_settings: JobSettings) -> None:
    settings = job_settings()
    db = settings.model_copy(
        update={"postgres": settings.postgres.model_copy(update={"port": free_port()})}
    )
    assert await WebhookDispatcher(db, WorkerMetrics()).run_once() == 0


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_the_worker_delivers_as_the_leader_and_counts(
    job_settings: JobSettings, receiver: Receiver, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """`faust -A app.worker worker` (ingestion off: alerts only) on the scratch database: its
    leader timer delivers, retries the 500, and /metrics counts."""
    db = settings_for(job_settings, receiver)
    env = await asyncio.to_thread(  # it makes the worker's topics with an event loop of its own
        pipeline_environment,
        stack_env, "http://127.0.0.1:9/unused", INGESTION_ENABLED="false",
        POSTGRES_DATABASE=db.postgres.database, ALERTS_WEBHOOKS_URLS=f'["{receiver.url}"]',
        ALERTS_WEBHOOKS_POLL_INTERVAL="200 ms", ALERTS_WEBHOOKS_BACKOFF_INITIAL="100 ms",
        ALERTS_WEBHOOKS_BACKOFF_MAX="200 ms",
    )  # fmt: skip
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        alert = surge(db)
        notify(db, alert, "opened", receiver.url)
        receiver.answers = [500]
        await until(lambda: len(receiver.requests) == 2, 120, "a 500, then the delivery")
        # Rounds run now: the closing is counted as made, and delivered.
        query(db, "UPDATE alerts SET closed_at = now() WHERE id = %s", (alert,))
        notify(db, alert, "closed", receiver.url)
        await until(lambda: len(receiver.requests) == 3, 30, "the closing")
        await asyncio.sleep(1)  # five more rounds: nothing sent again
        assert [body["event"] for _, body in receiver.requests] == ["opened", "opened", "closed"]
        metrics = worker_metrics(env)
        assert metrics['wikipulse_alerts_total{event="closed",kind="wiki_surge"}'] == 1
        deliveries = "wikipulse_webhook_deliveries_total"
        assert metrics[f'{deliveries}{{kind="wiki_surge",outcome="failed"}}'] == 1
        assert metrics[f'{deliveries}{{kind="wiki_surge",outcome="delivered"}}'] == 2
    finally:
        worker.stop()
