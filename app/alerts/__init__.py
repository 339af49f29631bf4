"""Alert delivery: the worker POSTs each alert opened and closed to the configured webhooks.

The Spark job's alert step (spark/alerts.py) writes the episodes to ``alerts`` and, in the same
transaction, one ``alert_notifications`` row per alert opened or closed and one
``alert_deliveries`` row per notification and webhook URL (an outbox). The worker elected
leader delivers them (:class:`app.alerts.webhooks.WebhookDispatcher`, a Faust timer):

- at least once: a delivery is marked done only after a 2xx answer; any other answer, a timeout
  or a refused connection is retried with backoff (``alerts.webhooks.backoff``), without end;
- never twice on purpose: a delivery is claimed (``FOR UPDATE SKIP LOCKED`` and a lease) before
  it is sent, and each body and its ``Idempotency-Key`` header carry the episode's key in event
  time (:func:`app.alerts.payload.idempotency_key`), the same for every retry, restart and
  replay, so a receiver can drop what it has seen;
- visible: ``status`` counts deliveries done, pending and failing with the newest error
  (:func:`app.alerts.store.delivery_summary`), ``/metrics`` counts notifications by kind and
  deliveries by outcome.
"""
