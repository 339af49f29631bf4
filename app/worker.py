"""The ingestion worker: ``faust -A app.worker worker``.

- ``ingest`` (a task, on the leader only: one SSE connection per deployment,
  :mod:`app.ingest.task`) follows the SSE stream and appends each event's bytes, as received,
  to the raw topic, keyed by its ``meta.id``, with its SSE id and receive time in headers. It
  resumes after the last event durably in the raw topic.
- the normalizer (a service of the app on every worker, :mod:`app.normalize.service`) turns
  each raw record into exactly one outcome: a typed event, a dead letter, or filtered /
  duplicate / canary, in batches, each batch's outputs, dedup changelog and raw offset
  committed in one Kafka transaction.
- ``deliver_alerts`` (a timer, on the leader only, :mod:`app.alerts`) POSTs the alerts the Spark
  job opened and closed to the configured webhooks.
- The web server serves ``/metrics`` (Prometheus) and ``/health``.
"""

from __future__ import annotations

from typing import Any

import faust

from app.alerts.webhooks import install as install_webhooks
from app.config import Settings, get_settings
from app.config.clients import faust_broker_options
from app.config.names import client_id, worker_datadir
from app.ingest.task import HealthState, IngestTask, error_report
from app.metrics import WorkerMetrics
from app.normalize import Filters
from app.normalize.service import Normalizer

#: Faust's consumer group session (seconds): how soon a dead worker's leader role moves on.
WORKER_SESSION_TIMEOUT = 15.0


class Worker:
    """The Faust app and everything it shares: settings, metrics, health."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.health = HealthState(ingesting=settings.ingestion.enabled)
        ingestion = settings.ingestion
        self.filters = Filters(
            namespaces=frozenset(ingestion.wikimedia.filters.namespaces),
            wikis=frozenset(ingestion.wikimedia.filters.wikis),
            types=frozenset(ingestion.wikimedia.filters.types),
        )
        datadir = worker_datadir(settings)
        datadir.parent.mkdir(parents=True, exist_ok=True)
        # Faust is the frame: the leader's SSE task, the normalizer service, the web server,
        # signals. It consumes no topic itself (the normalizer has its own consumer group and
        # transactions).
        self.app = faust.App(
            settings.app.id,
            **faust_broker_options(settings.kafka),  # broker, broker_credentials
            broker_client_id=client_id(settings, "worker"),
            # A SIGKILLed worker's successor waits this long for the leader role, at most.
            broker_session_timeout=WORKER_SESSION_TIMEOUT,
            broker_heartbeat_interval=WORKER_SESSION_TIMEOUT / 5,
            store="memory://",
            topic_replication_factor=settings.kafka.replication_factor,
            datadir=str(datadir),
            web_enabled=True,
            web_bind=settings.app.web.host,
            web_host=settings.app.web.host,
            web_port=settings.app.web.port,
        )
        self.ingest = IngestTask(settings, self.metrics, self.health, self.app.is_leader)
        self.normalizer = Normalizer(settings, self.filters, self.metrics, self.health)
        self._install()

    # ---- wiring -----------------------------------------------------------------------------

    def _install(self) -> None:
        app = self.app
        if self.settings.ingestion.enabled:
            # On the leader only: one SSE connection per deployment, however many workers.
            app.task(self.ingest.follow_leadership)
        # Started with the app once it runs, stopped with it; its crash crashes the app. (Faust
        # starts a service instance as it does a class: App._prepare_subservice; the annotation
        # of App.service names classes only.)
        app.service(self.normalizer)  # type: ignore[arg-type]
        if self.settings.alerts.enabled:
            # On the leader only, like the SSE connection (app/alerts).
            install_webhooks(app, self.settings, self.metrics)

        # Faust makes a View class of each function; it is called with the view and request.
        async def metrics(view: Any, request: Any) -> Any:
            return view.bytes(self.metrics.exposition(), content_type="text/plain; version=0.0.4")

        async def health(view: Any, request: Any) -> Any:
            body = self.health_report()
            return view.json(body, status=200 if body["healthy"] else 503)

        if self.settings.monitoring.enabled:
            app.page("/metrics")(metrics)
        app.page("/health")(health)

    def health_report(self) -> dict[str, Any]:
        timeout = self.settings.ingestion.health_timeout.total_seconds()
        return {
            "healthy": self.health.healthy(timeout),
            "connected": self.health.connected,
            "leader": self.health.leader,
            "last_received": self.health.last_received,
            "last_canary": self.health.last_canary,
            "last_event_time": self.health.last_event_time,
            "last_error": error_report(self.health.last_error),
            "outcomes": self.metrics.outcome_totals(),
            # Of several workers in one group, those this one normalizes.
            "raw_partitions": self.normalizer.owned_partitions(),
        }


def __getattr__(name: str) -> Any:
    """``faust -A app.worker`` looks up ``app``: build it (and load the settings) on first use."""
    if name == "app":
        worker = _default_worker()
        return worker.app
    raise AttributeError(name)


_worker: Worker | None = None


def _default_worker() -> Worker:
    global _worker
    if _worker is None:
        _worker = Worker(get_settings())
    return _worker
