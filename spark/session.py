"""The job's SparkSession: its configuration (connector jars, Kafka redaction, shuffle
partitions, the local driver's address) from the settings, built once per process."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from app.config import Settings
from app.config.clients import SPARK_REDACTION_REGEX
from spark import CONNECTOR_JARS_DIR


def connector_jars(settings: Settings) -> list[Path]:
    """The Kafka connector jars that ``./infra/wikipulse up`` fetched (into
    ``$WIKIPULSE_HOME/jars/spark``)."""
    return sorted((settings.home / CONNECTOR_JARS_DIR).glob("*.jar"))


def session_conf(settings: Settings) -> dict[str, str]:
    """The Spark configuration of the job (``spark-submit --conf``, or the session builder)."""
    spark = settings.spark
    conf = {
        "spark.master": spark.master,
        "spark.app.name": spark.app_name,
        "spark.sql.shuffle.partitions": str(spark.effective_shuffle_partitions),
        "spark.driver.memory": spark.driver.memory,
        "spark.executor.memory": spark.executor.memory,
        "spark.executor.instances": str(spark.executor.instances),
        "spark.executor.cores": str(spark.executor.cores),
        # Windows are aligned to the epoch; UTC keeps every printed time unambiguous.
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        # Kafka credentials and the client key are source options: keep them out of the
        # plans, logs and UI.
        "spark.redaction.regex": SPARK_REDACTION_REGEX,
    }
    if spark.master.startswith("spark://"):
        # A standalone master gives an application all the cores it can unless capped: cap it
        # at the executors asked for (instances x cores), one per worker where cores allow.
        conf["spark.cores.max"] = str(spark.executor.instances * spark.executor.cores)
    jars = connector_jars(settings)
    if jars:
        conf["spark.jars"] = ",".join(str(jar) for jar in jars)
    return conf


def driver_environment(settings: Settings) -> dict[str, str]:
    """What the driver's JVM reads from its environment: ``SPARK_LOCAL_IP``, the address it binds
    to, from ``spark.local_ip``; empty, loopback under a local master (its UI and ports are on
    127.0.0.1 like every component's), and on a cluster Spark's own choice."""
    spark = settings.spark
    address = spark.local_ip or ("127.0.0.1" if spark.master.startswith("local") else "")
    return {"SPARK_LOCAL_IP": address} if address else {}


def build_session(settings: Settings) -> SparkSession:
    """The job's SparkSession (or the running one: ``getOrCreate`` reuses it)."""
    builder = SparkSession.builder
    for key, value in session_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(settings.spark.log_level)
    return session
