"""The Spark job: the typed topic -> windowed aggregates -> PostgreSQL.

``spark-submit spark/job.py`` or ``python -m spark.job`` (see :mod:`spark.job`). This package
imports nothing heavy at import time: :mod:`spark.schema`, :mod:`spark.transforms` and
:mod:`spark.job` import pyspark, :mod:`spark.sink` and :mod:`spark.retention` only psycopg2.
"""

from pathlib import Path

from app.config.names import QUERY_NAME
from app.contract import (
    TABLE_ALERTS,
    TABLE_PAGE_ACTIVITY,
    TABLE_PIPELINE_BATCHES,
    TABLE_USER_EDIT_COUNTS,
    TABLE_WIKI_ACTIVITY,
)

#: Where the job finds its Kafka connector jars, under ``$WIKIPULSE_HOME`` (``./infra/wikipulse
#: up`` fetches them there: ``infra.home.Home.spark_jars``).
CONNECTOR_JARS_DIR = Path("jars", "spark")

#: The job's observed metric (``observedMetrics`` of a batch's progress report) counting the
#: records of a schema version it does not read, and its one value.
SCHEMA_CHECK = "schema_check"
UNKNOWN_SCHEMA_ROWS = "unknown_schema_rows"

__all__ = [
    "CONNECTOR_JARS_DIR",
    "QUERY_NAME",
    "SCHEMA_CHECK",
    "TABLE_ALERTS",
    "TABLE_PAGE_ACTIVITY",
    "TABLE_PIPELINE_BATCHES",
    "TABLE_USER_EDIT_COUNTS",
    "TABLE_WIKI_ACTIVITY",
    "UNKNOWN_SCHEMA_ROWS",
]
