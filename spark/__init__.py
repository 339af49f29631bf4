"""The Spark job: the typed topic -> windowed aggregates -> PostgreSQL.

``spark-submit spark/job.py`` or ``python -m spark.job`` (see :mod:`spark.job`). This package
imports nothing heavy at import time: :mod:`spark.schema`, :mod:`spark.transforms` and
:mod:`spark.job` import pyspark, :mod:`spark.sink` and :mod:`spark.retention` only psycopg2.
"""

from app.contract import TABLE_PIPELINE_BATCHES, TABLE_USER_EDIT_COUNTS, TABLE_WIKI_ACTIVITY

#: The streaming query's name: its checkpoint sub-directory and its pipeline_batches rows.
QUERY_NAME = "wikipulse_aggregates"

__all__ = ["QUERY_NAME", "TABLE_PIPELINE_BATCHES", "TABLE_USER_EDIT_COUNTS", "TABLE_WIKI_ACTIVITY"]
