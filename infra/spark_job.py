"""The Spark job as a background process: ``spark-submit spark/job.py``.

:func:`submit_command` builds that command line from the configuration; ``./infra/wikipulse up``
runs it (:class:`LocalSparkJob`), and so does the compose file's ``spark`` service.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from app.config import Settings
from app.config.clients import libpq_params
from infra.home import Home
from infra.processes import (
    InfraError,
    pid_alive,
    read_pid,
    spawn,
    stop_recorded,
    tail,
    wait_for,
)

COMPONENT = "spark"
STARTED = b"query wikipulse_aggregates started"


def submit_command(settings: Settings, *job_args: str) -> tuple[list[str], dict[str, str]]:
    """``spark-submit`` for the Spark job (:mod:`spark.job`), and the environment variables it
    needs on top of the caller's: what ``./infra/wikipulse up`` runs."""
    from spark.job import JOB_FILE, session_conf  # imports pyspark

    python = Path(sys.executable)
    submit = python.parent / "spark-submit"
    executable = str(submit) if submit.exists() else shutil.which("spark-submit") or "spark-submit"
    conf = session_conf(settings)
    jars = conf.pop("spark.jars", "")
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
        command += ["--jars", jars]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(JOB_FILE), *job_args]
    env = {"PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python)}
    if settings.spark.master.startswith("local") and "SPARK_LOCAL_IP" not in os.environ:
        # On one machine the driver (and its UI on 4040) listens on loopback only, like the
        # worker and the dashboard; on a cluster executors must reach it: set SPARK_LOCAL_IP.
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return command, env


@dataclass(frozen=True)
class LocalSparkJob:
    settings: Settings
    home: Home

    def pid(self) -> int | None:
        # spark-submit's command line names the connector jars under this home.
        return read_pid(self.home.pidfile(COMPONENT), str(self.home.spark_jars))

    def start(self, *, timeout: float = 240.0) -> int:
        """Start the job unless it runs; return once its streaming query has started."""
        pid = self.pid()
        if pid is not None:
            return pid
        command, extra_env = submit_command(self.settings)  # imports pyspark
        logfile = self.home.logfile(COMPONENT)
        offset = logfile.stat().st_size if logfile.exists() else 0
        pid = spawn(
            command,
            pidfile=self.home.pidfile(COMPONENT),
            logfile=logfile,
            env={**os.environ, **extra_env},
        )

        def started() -> bool:
            with open(logfile, "rb") as log:
                log.seek(offset)
                return STARTED in log.read()

        wait_for(lambda: not pid_alive(pid) or started(), timeout=timeout, interval=1.0)
        if not pid_alive(pid):
            raise InfraError(
                f"the Spark job exited during start-up ({logfile}):\n{tail(logfile, 30)}"
            )
        if not started():
            raise InfraError(f"the Spark job's query did not start within {timeout:.0f} s")
        return pid

    def stop(self) -> bool:
        # SIGTERM: the job stops after its current batch.
        return stop_recorded(self.pid(), self.home.pidfile(COMPONENT), timeout=60)

    def last_batch(self) -> str:
        """The newest pipeline_batches row, for `status`."""
        try:
            with psycopg2.connect(**libpq_params(self.settings.postgres), connect_timeout=3) as c:
                cursor = c.cursor()
                cursor.execute(
                    "SELECT batch_id, committed_at, rows_written, duration_ms,"
                    " rows_dropped_by_watermark, now() - committed_at"
                    " FROM pipeline_batches ORDER BY committed_at DESC LIMIT 1"
                )
                row = cursor.fetchone()
        except psycopg2.Error:
            return "no batch information (database unreachable)"
        if row is None:
            return "no batch yet"
        batch, _, written, duration, dropped, age = row
        return (
            f"batch {batch} {int(age.total_seconds())} s ago: {written} rows"
            f" in {duration if duration is not None else '?'} ms, late dropped {dropped or 0}"
        )
