"""Where local state lives: everything under ``$WIKIPULSE_HOME``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spark import CONNECTOR_JARS_DIR

INFRA_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = INFRA_DIR.parent


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def jars(self) -> Path:
        return self.root / "jars"

    @property
    def kafka_jars(self) -> Path:
        return self.jars / "kafka"

    @property
    def spark_jars(self) -> Path:
        """Where the Spark job looks for its Kafka connector jars."""
        return self.root / CONNECTOR_JARS_DIR

    @property
    def s3a_jars(self) -> Path:
        """hadoop-aws and the AWS SDK, for a checkpoint on ``s3a://`` (infra/spark/s3a/pom.xml)."""
        return self.jars / "spark-s3a"

    @property
    def spark_cluster(self) -> Path:
        """The local Spark standalone cluster's daemons: their settings and work directories."""
        return self.root / "spark-cluster"

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def postgres_data(self) -> Path:
        return self.postgres_dir / "data"

    @property
    def postgres_socket_dir(self) -> Path:
        return self.postgres_dir / "socket"

    @property
    def layout_file(self) -> Path:
        """The layout ``up`` ran here: single or cluster (infra/layout.py)."""
        return self.root / "layout"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def pidfile(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def logfile(self, component: str) -> Path:
        return self.logs / f"{component}.log"
