"""SSE -> raw: the stream, followed into the raw topic.

- :mod:`app.ingest.sse`: the SSE source, a resilient reader of Wikimedia EventStreams;
- :mod:`app.ingest.reconnect`: when and why it reconnects (reasons, waits, failures);
- :mod:`app.ingest.task`: the worker's ingest task (on the Faust leader only), which appends
  each event's bytes, as received and keyed by its ``meta.id``, to the raw topic, and the
  health it reports.
"""
