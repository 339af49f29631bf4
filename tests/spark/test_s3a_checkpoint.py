"""The job's checkpoint on S3 (``spark.checkpoint.location = s3a://…``), as a user with a real
cluster configures it: ``spark-submit`` as ``up`` runs it, with the jars ``up`` fetches for an
``s3a://`` location (infra/spark/s3a/pom.xml), the bucket's endpoint and keys in Spark's own
``$SPARK_CONF_DIR/spark-defaults.conf``. The bucket is moto's S3 server on loopback (S3 is
outside the project, like Wikimedia)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pyspark
import pytest

from app.config import Settings
from app.config.names import query_name
from infra.home import Home
from infra.processes import free_port
from infra.spark_job import S3A_POM, fetch_job_jars, submit_command
from tests.events import synthetic
from tests.spark.fixtures import JobSettings
from tests.spark.helpers import (
    batches,
    golden,
    produce,
    typed_events,
    user_edit_counts,
    wiki_activity,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "wikipulse-checkpoints"
KEYS = {"access": "wikipulse-test", "secret": "wikipulse-test-secret"}
START = datetime(2026, 6, 20, 15, 0, 30, tzinfo=UTC)
RECEIVED = datetime(2026, 6, 21, tzinfo=UTC)


@pytest.fixture
def s3() -> Iterator[Any]:
    """An S3 endpoint on a free loopback port with an empty bucket: (endpoint URL, client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEYS["access"],
            aws_secret_access_key=KEYS["secret"],
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


def spark_defaults(directory: Path, endpoint: str) -> Path:
    """What a user puts in ``$SPARK_CONF_DIR/spark-defaults.conf`` for a bucket not on AWS."""
    directory.mkdir()
    (directory / "spark-defaults.conf").write_text(
        f"spark.hadoop.fs.s3a.endpoint {endpoint}\n"
        "spark.hadoop.fs.s3a.endpoint.region us-east-1\n"
        "spark.hadoop.fs.s3a.path.style.access true\n"
        "spark.hadoop.fs.s3a.connection.ssl.enabled false\n"
        f"spark.hadoop.fs.s3a.access.key {KEYS['access']}\n"
        f"spark.hadoop.fs.s3a.secret.key {KEYS['secret']}\n"
    )
    return directory


def submit(settings: Settings, environ: dict[str, str], conf_dir: Path, log: Path) -> None:
    """``spark-submit spark/job.py --available-now`` with the jars ``up`` fetches; it stops
    once it has processed what the topic holds."""
    jars = fetch_job_jars(settings, Home(settings.home))
    assert any(jar.name.startswith("hadoop-aws-") for jar in jars), jars
    command, extra_env = submit_command(settings, "--available-now", jars=jars)
    env = {
        **environ,
        **extra_env,
        "KAFKA_TOPICS_TYPED_NAME": settings.kafka.topics.typed.name,
        "POSTGRES_DATABASE": settings.postgres.database,
        "SPARK_CHECKPOINT_LOCATION": settings.spark.checkpoint.location,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": str(conf_dir),
    }
    with log.open("wb") as output:
        result = subprocess.run(
            command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, timeout=300,
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, log.read_text(errors="replace")[-4000:]


def objects(client: Any, prefix: str) -> set[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"].removeprefix(prefix) for item in listed.get("Contents", [])}


def test_hadoop_aws_is_the_version_of_the_hadoop_client_pyspark_ships() -> None:
    shipped = list((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    assert len(shipped) == 1, shipped
    version = shipped[0].name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    pinned = ElementTree.parse(S3A_POM).findtext(
        "m:properties/m:hadoop.version", namespaces=namespace
    )
    assert pinned == version


def test_a_checkpoint_on_s3_carries_the_job_from_one_run_to_the_next(
    s3: Any, job_settings: JobSettings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint, client = s3
    settings = job_settings(SPARK_CHECKPOINT_LOCATION=f"s3a://{BUCKET}/checkpoints")
    conf_dir = spark_defaults(tmp_path / "spark-conf", endpoint)
    raw = synthetic(240, seed=5, start=START, rate=2.0)  # 15:00:30 to 15:02:30: the halves
    first, second = raw[:120], raw[120:]  # share the minute 15:01
    prefix = f"checkpoints/{query_name(settings)}/"

    produce(settings, typed_events(first, received_at=RECEIVED))
    submit(settings, stack_env, conf_dir, tmp_path / "first.log")
    expected_users, expected_wikis = golden(first, window=settings.spark.windowing.duration)
    assert user_edit_counts(settings) == expected_users
    assert wiki_activity(settings) == expected_wikis
    stored = objects(client, prefix)
    assert {"metadata", "offsets/0", "commits/0"} <= stored, sorted(stored)
    assert any(key.startswith("state/") for key in stored), sorted(stored)
    commits = {key for key in stored if key.startswith("commits/")}

    produce(settings, typed_events(second, received_at=RECEIVED))
    submit(settings, stack_env, conf_dir, tmp_path / "second.log")
    expected_users, expected_wikis = golden(raw, window=settings.spark.windowing.duration)
    assert user_edit_counts(settings) == expected_users
    assert wiki_activity(settings) == expected_wikis
    # The second run read only the new half: its offsets came from the checkpoint on S3 (and the
    # minute both halves share was completed from the state stored there).
    read = [batch["input_rows"] for batch in batches(settings) if batch["input_rows"]]
    assert sum(read) == len(raw), read
    assert {key for key in objects(client, prefix) if key.startswith("commits/")} > commits
