"""The Spark job: the typed topic -> windowed aggregates -> PostgreSQL.

``spark-submit spark/job.py`` or ``python -m spark.job`` (see :mod:`spark.job`). This package
imports nothing heavy at import time: :mod:`spark.schema`, :mod:`spark.transforms` and
:mod:`spark.job` import pyspark, :mod:`spark.sink` and :mod:`spark.retention` only psycopg2.
"""

from pathlib import Path

from app.config.names import QUERY_NAME
from app.contract import TABLE_PIPELINE_BATCHES, TABLE_USER_EDIT_COUNTS, TABLE_WIKI_ACTIVITY

#: Where the job finds its Kafka connector jars, under ``$WIKIPULSE_HOME`` (``./infra/wikipulse
#: up`` fetches them there: ``infra.home.Home.spark_jars``).
CONNECTOR_JARS_DIR = Path("jars", "spark")

__all__ = [
    "CONNECTOR_JARS_DIR",
    "QUERY_NAME",
    "TABLE_PIPELINE_BATCHES",
    "TABLE_USER_EDIT_COUNTS",
    "TABLE_WIKI_ACTIVITY",
]
