"""The Spark job: the typed topic -> windowed aggregates -> PostgreSQL, exactly once.

Run it with the Kafka connector jars (``$WIKIPULSE_HOME/jars/spark``, fetched by
``./infra/wikipulse up``)::

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit \\
        --jars "$(echo .wikipulse/jars/spark/*.jar | tr ' ' ,)" spark/job.py
    .venv/bin/python -m spark.job            # the same; sets spark.jars itself

(:func:`infra.spark_job.submit_command` builds the first one with every setting;
``./infra/wikipulse up`` runs it.)

Options: ``--available-now`` processes what the topic holds, then stops (backfill, tests);
``--rebuild`` recomputes every aggregate from the typed topic: it deletes the checkpoint,
reads from the earliest offset and upserts (the rows it recomputes replace the old ones);
``--status-file PATH`` keeps the query's state in PATH (:mod:`spark.status`), the health signal
``./infra/wikipulse up`` waits for.

Everything else comes from the configuration (``spark:`` and ``postgres:`` sections): master,
window, watermark, trigger, checkpoint location, starting offsets, memory.

One streaming query (:func:`app.config.names.query_name`) over the typed topic of
``spark.schema_version``: Kafka source (``read_committed``: the worker writes the typed topic in
transactions) -> :func:`spark.transforms.known_schema_only` (records of another schema version
are counted, never parsed) -> :func:`spark.transforms.parse_events` ->
watermark -> :func:`spark.transforms.aggregate` -> ``foreachBatch``
(:class:`spark.sink.PostgresSink`, then :class:`spark.alerts.AlertStep` over the minutes that
closed), output mode ``update``. A listener on the query's progress
completes each batch's ``pipeline_batches`` row and logs its line; a thread applies the
retention every hour.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit spark/job.py: import from the project, not spark/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.listener import StreamingQueryListener
from pyspark.sql.streaming.query import StreamingQuery

from app.config import Settings, load_settings_or_exit, spark_interval
from app.config.clients import spark_kafka_options
from app.config.names import client_id, query_name, spark_checkpoint, spark_source
from spark import CONNECTOR_JARS_DIR, QUERY_NAME
from spark.alerts import AlertStep
from spark.retention import RetentionThread
from spark.session import build_session, connector_jars, driver_environment
from spark.sink import BatchProgress, BatchRows, PostgresSink
from spark.status import FAILED, RUNNING, STOPPED, StatusFile
from spark.transforms import (
    aggregate,
    known_schema_only,
    parse_events,
    sink_rows,
    with_watermark,
)

log = logging.getLogger("spark.job")

JOB_FILE = Path(__file__).resolve()
PROGRESS_RETRY_DELAYS = (0.5, 2.0)
#: How often ``run`` looks at its stop event while the query runs.
STOP_CHECK_SECONDS = 1


# ---- the query -------------------------------------------------------------------------------


def kafka_source_options(settings: Settings) -> dict[str, str]:
    """The Kafka source's connection options: brokers, security protocol, SASL, TLS
    (:func:`app.config.clients.spark_kafka_options`), and the job's client id."""
    return {
        **spark_kafka_options(settings.kafka),
        "kafka.client.id": client_id(settings, "spark"),
    }


def read_typed_topic(
    spark: SparkSession, settings: Settings, *, starting_offsets: str | None = None
) -> DataFrame:
    """The typed topic as a stream of Kafka records."""
    reader = (
        spark.readStream.format("kafka")
        .options(**kafka_source_options(settings))
        .option("subscribe", spark_source(settings).name)
        # Used only by a new checkpoint; afterwards the checkpoint's offsets rule.
        .option("startingOffsets", starting_offsets or settings.spark.starting_offsets)
        # The worker writes the typed topic transactionally: never read aborted records.
        .option("kafka.isolation.level", "read_committed")
        # The schema headers say which contract a record follows (known_schema_only).
        .option("includeHeaders", "true")
        # Offsets that vanished before the job read them (retention, a recreated topic) are
        # skipped with a warning in Spark's log instead of stopping the job for good: the
        # aggregates cannot be more complete than the topic, and `--rebuild` recomputes them.
        .option("failOnDataLoss", "false")
    )
    if settings.spark.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.spark.max_offsets_per_trigger)
    return reader.load()


def aggregates(records: DataFrame, settings: Settings) -> DataFrame:
    """Kafka records -> the rows the sink writes (both tables)."""
    windowing = settings.spark.windowing
    version = settings.spark.schema_version
    events = parse_events(known_schema_only(records, version), version)
    return sink_rows(aggregate(with_watermark(events, windowing.watermark), windowing.duration))


class ProgressListener(StreamingQueryListener):
    """Completes each executed batch's pipeline_batches row from the query's progress report
    (Spark publishes it once the batch is committed) and logs the batch's line; keeps the
    status file (``status``) up to date."""

    def __init__(
        self, sink: PostgresSink, query_name: str = QUERY_NAME, status: StatusFile | None = None
    ) -> None:
        self.sink = sink
        self.query_name = query_name
        self.status = status
        self.run_id: str | None = None
        self.closed = False  # reports still queued when the job ends are not recorded

    def onQueryStarted(self, event: Any) -> None:
        if event.name == self.query_name:
            log.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)
            if self.status is not None:
                self.status.write(RUNNING)

    def onQueryProgress(self, event: Any) -> None:
        if self.closed:
            return
        try:
            report = json.loads(event.progress.json)
            if report.get("name") != self.query_name:
                return
            if self.run_id is not None and report.get("runId") != self.run_id:
                return
            progress = BatchProgress.from_report(report)
            if self.status is not None:
                self.status.write(
                    RUNNING, batch=report.get("batchId") if progress.executed else None
                )
            if progress.executed:
                self.sink.record_progress(progress)
        except Exception:  # a listener must never take the query down
            log.exception("recording a batch's progress failed")

    def onQueryIdle(self, event: Any) -> None:
        if self.status is not None and str(event.runId) == self.run_id:
            self.status.write(RUNNING)  # waiting for data: alive all the same

    def onQueryTerminated(self, event: Any) -> None:
        if self.run_id is None or str(event.runId) == self.run_id:
            if event.exception:
                log.error("query stopped: %s", event.exception)
            else:
                log.info("query stopped")
            if self.status is not None:
                error = str(event.exception) if event.exception else None
                self.status.write(FAILED if error else STOPPED, error=error)


@dataclass
class RunningJob:
    """A started query and what runs beside it; :meth:`close` when the query has ended."""

    spark: SparkSession
    query: StreamingQuery
    sink: PostgresSink
    progress_sink: PostgresSink
    listener: ProgressListener
    retention: RetentionThread | None = None
    closed: bool = field(default=False, init=False)

    def reconcile(self) -> None:
        """Fill in the progress of batches whose report the listener missed (the query may end
        before Spark's listener bus delivers the last report)."""
        for report in self.query.recentProgress:
            progress = BatchProgress.from_report(_as_dict(report))
            if progress.executed:
                self.progress_sink.record_progress(progress)

    def stop(self) -> None:
        self.query.stop()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.retention is not None:
            self.retention.stop()
            self.retention.join(timeout=30)  # a round of deletes is short
        try:
            self.reconcile()
        finally:
            self.listener.closed = True
            self.spark.streams.removeListener(self.listener)
            self.sink.close()
            self.progress_sink.close()
            # The listener's termination event may come after its removal: say it here.
            if self.listener.status is not None:
                error = self.query.exception()
                state = FAILED if error is not None else STOPPED
                self.listener.status.write(state, error=None if error is None else str(error))


def _as_dict(report: Any) -> dict[str, Any]:
    """A progress report as plain JSON values (pyspark's own report objects hold Rows)."""
    if hasattr(report, "json"):
        return dict(json.loads(report.json))
    return dict(report)


def _delete_checkpoint(spark: SparkSession, location: str) -> None:
    """Delete a checkpoint on any Hadoop-compatible file system."""
    jvm: Any = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    filesystem = path.getFileSystem(spark._jsc.hadoopConfiguration())
    if filesystem.exists(path):
        filesystem.delete(path, True)
        log.info("rebuild: deleted the checkpoint %s", location)


def start(
    spark: SparkSession,
    settings: Settings,
    *,
    available_now: bool = False,
    rebuild: bool = False,
    retention: bool = True,
    status: StatusFile | None = None,
) -> RunningJob:
    """Start the streaming query (and the progress listener and retention beside it); keep
    ``status`` up to date."""
    location = spark_checkpoint(settings)
    name = query_name(settings)
    sink = PostgresSink(settings.postgres, query_name=name)
    # Progress is best effort (RunningJob.reconcile catches up): no long retries.
    progress_sink = PostgresSink(
        settings.postgres, query_name=name, retry_delays=PROGRESS_RETRY_DELAYS
    )
    starting_offsets = None
    if rebuild:
        _delete_checkpoint(spark, location)
        forgotten = sink.forget_batches()
        log.info("rebuild: from the earliest offset; forgot %d pipeline_batches rows", forgotten)
        starting_offsets = "earliest"

    alerts = AlertStep(settings, sink) if settings.alerts.enabled else None

    def write(batch: DataFrame, batch_id: int) -> None:
        sink.write_batch(batch_id, BatchRows.split(batch.collect()))
        # After the batch's commit, in a transaction of its own: a retried batch rewrites the
        # same rows, and the step evaluates only minutes it has not evaluated yet.
        if alerts is not None:
            alerts.run()

    listener = ProgressListener(progress_sink, name, status=status)
    spark.streams.addListener(listener)
    writer = (
        aggregates(read_typed_topic(spark, settings, starting_offsets=starting_offsets), settings)
        .writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(write)
        .option("checkpointLocation", location)
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(
            processingTime=spark_interval(settings.spark.trigger.processing_time)
        )
    try:
        query = writer.start()
    except Exception:
        spark.streams.removeListener(listener)
        raise
    listener.run_id = str(query.runId)
    thread = None
    if retention:
        thread = RetentionThread(settings.postgres)
        thread.start()
    log.info(
        "reading %s from %s; checkpoint %s; window %s, watermark %s, %s",
        spark_source(settings).name,
        settings.kafka.bootstrap_servers,
        location,
        spark_interval(settings.spark.windowing.duration),
        spark_interval(settings.spark.windowing.watermark),
        "available now"
        if available_now
        else f"trigger every {spark_interval(settings.spark.trigger.processing_time)}",
    )
    return RunningJob(spark, query, sink, progress_sink, listener, thread)


def run(
    spark: SparkSession,
    settings: Settings,
    *,
    available_now: bool = False,
    rebuild: bool = False,
    retention: bool = True,
    stop: threading.Event | None = None,
    status: StatusFile | None = None,
) -> None:
    """Run the job until its query ends (with ``available_now``: once the topic is read), or
    until ``stop`` is set (then the query stops after its current batch).

    Raises ``StreamingQueryException`` when the query fails.
    """
    job = start(
        spark,
        settings,
        available_now=available_now,
        rebuild=rebuild,
        retention=retention,
        status=status,
    )
    try:
        while not job.query.awaitTermination(STOP_CHECK_SECONDS):
            if stop is not None and stop.is_set():
                log.info("stop requested: stopping the query after its current batch")
                job.stop()
    finally:
        if job.query.isActive:
            job.stop()
        job.close()


# ---- the command line ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark.job",
        description="wikipulse's Spark job: the typed topic -> windowed aggregates -> "
        "PostgreSQL. Configured like every component (app/config/conf/conf.yaml, .env, "
        "environment).",
    )
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="process what the topic holds now, then stop (backfill, rebuild, tests)",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="recompute every aggregate from the typed topic: delete the checkpoint, read from "
        "the earliest offset, upsert (stop the running job first)",
    )
    parser.add_argument(
        "--status-file",
        type=Path,
        metavar="PATH",
        help="keep the query's state in PATH (JSON, replaced atomically: spark/status.py), "
        "the health signal `./infra/wikipulse up` waits for",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings_or_exit("spark")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if not connector_jars(settings):
        log.warning(
            "no Kafka connector jars in %s: `./infra/wikipulse up` fetches them (or pass them "
            "with spark-submit --jars)",
            settings.home / CONNECTOR_JARS_DIR,
        )
    # The JVM that getOrCreate starts reads it (spark-submit gets it from submit_command).
    os.environ.update(driver_environment(settings))
    spark = build_session(settings)
    # SIGTERM / Ctrl-C: finish the current batch and stop. (Raising from the handler would
    # break the Py4J call the main thread is blocked in.)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()  # nothing else: a signal handler may interrupt anything, logging included

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run(
            spark,
            settings,
            available_now=args.available_now,
            rebuild=args.rebuild,
            stop=stop,
            status=StatusFile(args.status_file, query_name(settings)) if args.status_file else None,
        )
    except StreamingQueryException as error:
        log.error("the query failed: %s", error)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
