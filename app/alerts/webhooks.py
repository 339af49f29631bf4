"""The worker's webhook dispatcher: a Faust timer on the leader (:mod:`app.alerts`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import orjson
import psycopg2
import psycopg2.extensions

from app.alerts import store
from app.alerts.payload import json_body, retry_delay, slack_body
from app.alerts.store import Delivery, Outcome
from app.config.clients import libpq_params
from app.config.settings import Settings
from app.metrics import DELIVERED, FAILED, WorkerMetrics

log = logging.getLogger(__name__)

#: Deliveries claimed per round (the next round takes the rest).
ROUND_SIZE = 50
#: The longest an answer's text kept as the delivery's last error.
ERROR_CHARS = 300

T = TypeVar("T")


class WebhookDispatcher:
    """One round every ``alerts.webhooks.poll_interval``: count the notifications made since the
    last round (``/metrics``), then POST the deliveries that are due, one after the other."""

    def __init__(self, settings: Settings, metrics: WorkerMetrics) -> None:
        self.webhooks = settings.alerts.webhooks
        self.metrics = metrics
        self._params = {
            **libpq_params(settings.postgres),
            "application_name": "wikipulse-webhooks",
            "connect_timeout": 5,
        }
        self._newest_seen: int | None = None
        self._unreachable = False
        self._user_agent = f"wikipulse-alerts ({settings.ingestion.wikimedia.contact})"

    async def run_once(self) -> int:
        """One round; the number of deliveries attempted. PostgreSQL out of reach (or not
        migrated yet) skips the round, said once in the log until it answers again."""
        try:
            deliveries = await asyncio.to_thread(self._in_transaction, self._count_and_claim)
        except psycopg2.Error as error:
            if not self._unreachable:
                log.warning("alerts: PostgreSQL does not answer (%s); retrying", error)
            self._unreachable = True
            return 0
        self._unreachable = False
        if not deliveries:
            return 0
        timeout = aiohttp.ClientTimeout(total=self.webhooks.timeout.total_seconds())
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for delivery in deliveries:
                outcome = await self._post(session, delivery)
                retry_in = retry_delay(delivery.attempts + 1, self.webhooks.backoff)
                await asyncio.to_thread(
                    self._in_transaction,
                    lambda cursor, d=delivery, o=outcome, r=retry_in: store.record(cursor, d, o, r),
                )
                kind = delivery.notification.kind
                label = DELIVERED if outcome.delivered else FAILED
                self.metrics.webhook_deliveries.labels(kind=kind, outcome=label).inc()
                if not outcome.delivered:
                    log.warning(
                        "alerts: delivering %s %s to %s failed (attempt %d): %s; retrying in %s",
                        delivery.notification.kind, delivery.notification.event, delivery.url,
                        delivery.attempts + 1, outcome.error, retry_in,
                    )  # fmt: skip
        return len(deliveries)

    def _count_and_claim(self, cursor: psycopg2.extensions.cursor) -> list[Delivery]:
        self._newest_seen, made = store.new_notifications(cursor, self._newest_seen)
        for kind, event in made:
            self.metrics.alerts.labels(kind=kind, event=event).inc()
        if not self.webhooks.urls:
            return []
        # Held for as long as a round can take: then a crashed dispatcher's come back.
        lease = self.webhooks.timeout * (ROUND_SIZE + 1)
        return store.claim(cursor, self.webhooks.urls, limit=ROUND_SIZE, lease=lease)

    async def _post(self, session: aiohttp.ClientSession, delivery: Delivery) -> Outcome:
        notification = delivery.notification
        body = (
            slack_body(notification) if self.webhooks.format == "slack" else json_body(notification)
        )
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": notification.idempotency_key,
            "User-Agent": self._user_agent,
        }
        try:
            async with session.post(delivery.url, data=orjson.dumps(body), headers=headers) as r:
                if 200 <= r.status < 300:
                    return Outcome(True, r.status, None)
                text = (await r.text(errors="replace"))[:ERROR_CHARS]
                return Outcome(False, r.status, f"HTTP {r.status}: {text}".strip())
        except (aiohttp.ClientError, TimeoutError) as error:
            return Outcome(False, None, f"{type(error).__name__}: {error}"[:ERROR_CHARS])

    def _in_transaction(self, work: Callable[[psycopg2.extensions.cursor], T]) -> T:
        connection = psycopg2.connect(**self._params)
        try:
            with connection, connection.cursor() as cursor:
                return work(cursor)
        finally:
            connection.close()


def install(app: Any, settings: Settings, metrics: WorkerMetrics) -> WebhookDispatcher:
    """The dispatcher as a timer of the Faust ``app``, on the leader only."""
    dispatcher = WebhookDispatcher(settings, metrics)
    interval = settings.alerts.webhooks.poll_interval.total_seconds()

    async def deliver_alerts() -> None:
        await dispatcher.run_once()

    app.timer(interval, on_leader=True)(deliver_alerts)
    return dispatcher
