"""Prometheus metrics of the ingestion worker, served at ``/metrics`` on its web server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from app.alerts.payload import CLOSED, KINDS, OPENED
from app.contract import Outcome

#: wikipulse_webhook_deliveries_total's outcomes.
DELIVERED, FAILED = "delivered", "failed"


class WorkerMetrics:
    """One registry per worker (so tests can make several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "wikipulse_ingest_events",
            "Raw records processed by the normalizer, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in Outcome:  # every outcome is exported from the start, at 0
            self.events.labels(outcome=outcome.value)
        self.received = Counter(
            "wikipulse_sse_events_received",
            "SSE events received and written to the raw topic.",
            registry=self.registry,
        )
        self.reconnects = Counter(
            "wikipulse_sse_reconnects",
            "Reconnects of the SSE stream, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.connected = Gauge(
            "wikipulse_sse_connected", "1 while the SSE stream is open.", registry=self.registry
        )
        self.last_event_time = Gauge(
            "wikipulse_last_event_time_seconds",
            "Event time of the last valid event (epoch seconds).",
            registry=self.registry,
        )
        self.last_received_time = Gauge(
            "wikipulse_last_received_time_seconds",
            "When the last SSE event was received (epoch seconds).",
            registry=self.registry,
        )
        self.last_canary_time = Gauge(
            "wikipulse_last_canary_time_seconds",
            "When the last canary event was processed (epoch seconds).",
            registry=self.registry,
        )
        self.lag = Gauge(
            "wikipulse_lag_seconds",
            "Now minus the event time of the last valid event, when it was processed.",
            registry=self.registry,
        )

        self.alerts = Counter(
            "wikipulse_alerts",
            "Alerts opened and closed (by the Spark job's alert step), by kind.",
            ["kind", "event"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "wikipulse_webhook_deliveries",
            "Attempts at delivering an alert to a webhook, by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        for kind in KINDS:  # exported from the start, at 0
            for event in (OPENED, CLOSED):
                self.alerts.labels(kind=kind, event=event)
            for result in (DELIVERED, FAILED):
                self.webhook_deliveries.labels(kind=kind, outcome=result)

    def count(self, outcome: Outcome, amount: int = 1) -> None:
        self.events.labels(outcome=outcome.value).inc(amount)

    def outcome_totals(self) -> dict[str, float]:
        return {
            o.value: self.registry.get_sample_value(
                "wikipulse_ingest_events_total", {"outcome": o.value}
            )
            or 0.0
            for o in Outcome
        }

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
