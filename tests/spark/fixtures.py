"""The Spark fixtures, a pytest plugin (registered in tests/conftest.py) so that tests/spark/ and
tests/recorded/ share them: one SparkSession (JVM start-up costs ~20 s on two cores), with the
Kafka connector jars that the session's stack fetched, from the first test that needs it to the
last, its JVM stopped then so that later stacks (the end-to-end one) have the memory; a fresh
topic, database and checkpoint per test (``job_settings``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pyspark import SparkContext
from pyspark.sql import SparkSession

from app.config import Settings
from infra.home import Home
from infra.stack import Stack
from tests.conftest import SPARK_DRIVER_MEMORY
from tests.harness import scratch_database

JobSettings = Callable[..., Settings]

#: The run's last test that uses the ``spark`` fixture (after deselection), if any.
LAST_SPARK_TEST = pytest.StashKey[pytest.Item | None]()
#: The ``spark`` fixture's definition and request, once it is set up: to finish it early.
SPARK_FIXTURE = pytest.StashKey[tuple[pytest.FixtureDef[object], pytest.FixtureRequest]]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item for item in items if "spark" in getattr(item, "fixturenames", ())]
    config.stash[LAST_SPARK_TEST] = users[-1] if users else None


def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> None:
    if fixturedef.argname == "spark":
        request.config.stash[SPARK_FIXTURE] = (fixturedef, request)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """After the last test that uses the SparkSession, finish the fixture (stop its JVM) rather
    than at the session's end; a later test that asked for it again would start a new one."""
    yield
    stash = item.config.stash
    if item is stash.get(LAST_SPARK_TEST, None) and SPARK_FIXTURE in stash:
        fixturedef, request = stash[SPARK_FIXTURE]
        fixturedef.finish(request)


def stop_with_its_jvm(session: SparkSession) -> None:
    """``stop()`` ends the SparkContext but leaves its JVM (~0.5 GB) running as long as Python
    does; closing the gateway and the JVM's stdin (PySpark's JVM exits at its end) ends it."""
    session.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    gateway.shutdown()
    gateway.proc.stdin.close()
    gateway.proc.wait(60)
    SparkContext._gateway = None
    SparkContext._jvm = None


@pytest.fixture(scope="session")
def spark(stack: Stack) -> Iterator[SparkSession]:
    """One SparkSession from the first test that uses it to the last (see above)."""
    jars = sorted(Home(stack.settings.home).spark_jars.glob("*.jar"))
    assert jars, "the stack fixture fetches the Kafka connector jars"
    previous_ip = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # read by the JVM that getOrCreate starts
    session = (
        SparkSession.builder.master("local[2]")
        .appName("wikipulse-tests")
        .config("spark.driver.memory", SPARK_DRIVER_MEMORY)  # read when the JVM starts
        .config("spark.jars", ",".join(str(jar) for jar in jars))
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    stop_with_its_jvm(session)
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
