"""The Spark job as a background process: ``spark-submit spark/job.py``.

:func:`submit_command` builds that command line from the configuration; ``./infra/wikipulse up``
runs it (:class:`LocalSparkJob`), and so does the compose file's ``spark`` service.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2

from app.config import Settings
from app.config.clients import libpq_params
from infra.component import ComponentState, Progress, SpawnedComponent
from infra.home import INFRA_DIR, Home
from infra.kafka import SPARK_POM, fetch_spark_jars
from infra.maven import fetch_jars, needs_maven
from spark.status import RUNNING, read_status

#: hadoop-aws and the AWS SDK: the s3a:// file system, for a checkpoint on S3.
S3A_POM = INFRA_DIR / "spark" / "s3a" / "pom.xml"


def submit_command(
    settings: Settings, *job_args: str, jars: Sequence[Path] | None = None
) -> tuple[list[str], dict[str, str]]:
    """``spark-submit`` for the Spark job (:mod:`spark.job`), and the environment variables it
    needs on top of the caller's: what ``./infra/wikipulse up`` runs. ``jars``: the jars for
    ``--jars`` (default: those ``up`` fetched into ``$WIKIPULSE_HOME``, :func:`job_jars`)."""
    from spark.job import JOB_FILE  # imports pyspark
    from spark.session import driver_environment, session_conf

    python = Path(sys.executable)
    submit = python.parent / "spark-submit"
    executable = str(submit) if submit.exists() else shutil.which("spark-submit") or "spark-submit"
    if jars is None:
        jars = job_jars(settings, Home(settings.home))
    conf = session_conf(settings)
    conf.pop("spark.jars", None)  # the jars are the caller's
    command = [
        executable,
        "--master",
        conf.pop("spark.master"),
        "--name",
        conf.pop("spark.app.name"),
        "--driver-memory",
        conf.pop("spark.driver.memory"),
    ]
    if jars:
        command += ["--jars", ",".join(str(jar) for jar in jars)]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(JOB_FILE), *job_args]
    env = {
        "PYSPARK_PYTHON": str(python),
        "PYSPARK_DRIVER_PYTHON": str(python),
        **driver_environment(settings),  # SPARK_LOCAL_IP, from spark.local_ip
    }
    return command, env


def needs_s3a(settings: Settings) -> bool:
    """Whether the job's checkpoint is on S3 (``s3a://``): Spark needs hadoop-aws for it."""
    return settings.checkpoint_location.startswith("s3a://")


def job_jars(settings: Settings, home: Home) -> list[Path]:
    """The jars ``up`` fetched into ``home`` for the job: the Kafka connector's
    (:func:`infra.kafka.fetch_spark_jars`), and hadoop-aws's for an ``s3a://`` checkpoint."""
    jars = sorted(home.spark_jars.glob("*.jar"))
    if needs_s3a(settings):
        jars += sorted(home.s3a_jars.glob("*.jar"))
    return jars


def fetch_job_jars(settings: Settings, home: Home) -> list[Path]:
    """Fetch (the first time, with Maven; then from the jar cache) and return the job's jars."""
    jars = fetch_spark_jars(home)
    if needs_s3a(settings):
        jars += fetch_jars(S3A_POM, home.s3a_jars, log_file=home.logfile("maven"))
    return jars


@dataclass(frozen=True)
class LocalSparkJob(SpawnedComponent):
    """``spark-submit`` of the job, ready (and healthy) when the job's status file says its
    query runs (:mod:`spark.status`)."""

    name = "spark"
    title = "the Spark job"
    not_ready = "the Spark job's query did not start"
    # SIGTERM: the job stops after its current batch.
    stop_timeout = 60.0

    @property
    def status_file(self) -> Path:
        return self.home.run / "spark.status.json"

    @property
    def marker(self) -> str:
        # spark-submit passes the job its arguments, this home's status file among them.
        return str(self.status_file)

    def status(self) -> dict[str, Any] | None:
        """What the job last wrote to its status file; None before it wrote any."""
        return read_status(self.status_file)

    def query_running(self) -> bool:
        status = self.status()
        return status is not None and status.get("state") == RUNNING

    def healthy(self) -> bool:
        return self.pid() is not None and self.query_running()

    def prepare(self, progress: Progress) -> None:
        """The connector jars: the Spark tests use them without the job."""
        if needs_maven(SPARK_POM):
            progress("spark: fetching the Kafka connector jars with Maven (first time only)")
        if needs_s3a(self.settings) and needs_maven(S3A_POM):
            progress(
                "spark: fetching hadoop-aws and the AWS SDK for the s3a:// checkpoint with Maven "
                "(about 700 MB, first time only)"
            )
        fetch_job_jars(self.settings, self.home)

    def announce(self, progress: Progress) -> None:
        progress("spark: starting the job with spark-submit (about 20 s)")

    def start(self, *, timeout: float = 240.0) -> int:
        """Start the job unless it runs; its pid once its streaming query has started."""
        pid = self.pid()
        if pid is not None:
            return pid
        jars = fetch_job_jars(self.settings, self.home)
        # A killed job's last word is not the new one's.
        self.status_file.unlink(missing_ok=True)
        status_args = ("--status-file", str(self.status_file))
        command, extra_env = submit_command(self.settings, *status_args, jars=jars)
        return self.spawn_and_wait(
            command,
            ready=self.query_running,
            timeout=timeout,
            interval=1.0,
            env={**os.environ, **extra_env},
        )

    def state(self) -> ComponentState:
        pid = self.pid()
        status = self.status() if pid is not None else None
        state = None if status is None else status.get("state")
        if pid is None:
            detail = "not running"
        elif state == RUNNING:
            detail = self.last_batch()
        else:
            detail = f"query {state}" if state else "starting (its query has not started yet)"
        healthy = pid is not None and state == RUNNING
        address = self.settings.spark.master
        return ComponentState(self.name, True, True, healthy, pid, address, detail)

    def _query(self, sql: str) -> tuple[Any, ...] | None:
        """The first row of ``sql`` on the configured database (psycopg2.Error when it cannot
        answer)."""
        connection = psycopg2.connect(**libpq_params(self.settings.postgres), connect_timeout=3)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(sql)
                row: tuple[Any, ...] | None = cursor.fetchone()
                return row
        finally:
            connection.close()

    def last_batch(self) -> str:
        """The newest pipeline_batches row, and the records of an unknown schema version skipped
        so far, for `status`."""
        try:
            row = self._query(
                "SELECT batch_id, committed_at, rows_written, duration_ms,"
                " rows_dropped_by_watermark, now() - committed_at,"
                " (SELECT coalesce(sum(unknown_schema_rows), 0) FROM pipeline_batches)"
                " FROM pipeline_batches ORDER BY committed_at DESC LIMIT 1"
            )
        except psycopg2.Error:
            return "no batch information (database unreachable)"
        if row is None:
            return "no batch yet"
        batch, _, written, duration, dropped, age, unknown = row
        line = (
            f"batch {batch} {int(age.total_seconds())} s ago: {written} rows"
            f" in {duration if duration is not None else '?'} ms, late dropped {dropped or 0}"
        )
        if unknown:
            line += f"; {unknown} records of an unknown schema version skipped (spark/README.md)"
        return line

    def newest_event(self) -> tuple[datetime, float] | None:
        """(event time, age in seconds) of the newest event the job has written to PostgreSQL
        (``pipeline_batches.max_event_time``); None before the first.
        Raises psycopg2.Error when the database cannot answer."""
        row = self._query(
            "SELECT newest, extract(epoch FROM now() - newest)::float8"
            " FROM (SELECT max(max_event_time) AS newest FROM pipeline_batches) AS b"
            " WHERE newest IS NOT NULL"
        )
        return None if row is None else (row[0], float(row[1]))
