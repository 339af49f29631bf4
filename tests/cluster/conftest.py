"""The cluster layout (``./infra/wikipulse up --cluster``), started once for every test here: its
own home and free ports (three brokers, three controllers), the whole pipeline on it, fed by a
replay server serving one recording that grows per phase (``--replay FILE --once``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings, load_settings
from infra.processes import free_port, port_open
from tests.conftest import make_home
from tests.harness import cli_environment, run_cli

BROKERS = 3


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the local controllers' ports)."""
    for _ in range(50):
        first = free_port()
        if all(not port_open("127.0.0.1", first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


class Cluster:
    """One user's home in the cluster layout, driven through the CLI."""

    def __init__(self, home: Path) -> None:
        self.home = home
        brokers = ",".join(f"127.0.0.1:{free_port()}" for _ in range(BROKERS))
        self.env = cli_environment(
            home,
            KAFKA_BOOTSTRAP_SERVERS=brokers,
            KAFKA_LOCAL_CONTROLLER_PORT=str(consecutive_free_ports(BROKERS)),
            INGESTION_WIKIMEDIA_FILTERS_NAMESPACES="[]",  # every event counts
            INGESTION_BACKOFF_INITIAL="100 ms",
            INGESTION_BACKOFF_MAX="1 second",
            INGESTION_HEALTH_TIMEOUT="1 hour",  # a served file, then silence: still healthy
            SPARK_TRIGGER_PROCESSING_TIME="2 seconds",
            POSTGRES_RETENTION_DAYS="100000",
        )

    @property
    def settings(self) -> Settings:
        """What the CLI reads in this home (the layout it recorded included)."""
        return load_settings(environ={**self.env, "WIKIPULSE_LAYOUT": "cluster"})

    def cli(self, *args: str, timeout: float = 300) -> tuple[int, str, str]:
        result = run_cli(self.env, *args, timeout=timeout)
        return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    home = make_home("wikipulse-cluster-")
    deployment = Cluster(home)
    try:
        yield deployment
    finally:
        run_cli(deployment.env, "down", "--purge", timeout=180)
        shutil.rmtree(home, ignore_errors=True)
