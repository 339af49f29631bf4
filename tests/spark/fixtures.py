"""The Spark fixtures, a pytest plugin (registered in tests/conftest.py) so that tests/spark/ and
tests/recorded/ share them: one SparkSession for the whole run (JVM start-up costs ~20 s on two
cores), with the Kafka connector jars that the session's stack fetched; a fresh topic, database
and checkpoint per test (``job_settings``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from app.config import Settings
from infra.home import Home
from infra.stack import Stack
from tests.spark.helpers import scratch_database

JobSettings = Callable[..., Settings]


@pytest.fixture(scope="session")
def spark(stack: Stack) -> Iterator[SparkSession]:
    jars = sorted(Home(stack.settings.home).spark_jars.glob("*.jar"))
    assert jars, "the stack fixture fetches the Kafka connector jars"
    previous_ip = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # read by the JVM that getOrCreate starts
    session = (
        SparkSession.builder.master("local[2]")
        .appName("wikipulse-tests")
        .config("spark.jars", ",".join(str(jar) for jar in jars))
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if previous_ip is None:
        os.environ.pop("SPARK_LOCAL_IP", None)
    else:
        os.environ["SPARK_LOCAL_IP"] = previous_ip


@pytest.fixture
def job_settings(stack: Stack, stack_env: dict[str, str], tmp_path: Path) -> Iterator[JobSettings]:
    """``job_settings(**overrides)``: settings with a new typed topic (created on first write),
    a new migrated database and a new checkpoint directory; extra environment overrides as
    keyword arguments (``SPARK_TRIGGER_PROCESSING_TIME="1 second"``)."""
    with ExitStack() as cleanup:

        def make(**overrides: str) -> Settings:
            suffix = uuid.uuid4().hex[:8]
            environ = {
                **stack_env,
                "KAFKA_TOPICS_TYPED_NAME": f"typed-{suffix}",
                "SPARK_CHECKPOINT_LOCATION": str(tmp_path / f"checkpoints-{suffix}"),
                **overrides,
            }
            return cleanup.enter_context(scratch_database(stack, environ))

        yield make
