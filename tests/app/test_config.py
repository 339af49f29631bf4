"""The one configuration: sources, precedence, environment names, validation messages."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from app.config import (
    DEFAULTS_FILE,
    ENV_VARS,
    KEYS,
    ConfigError,
    env_var_name,
    load_settings,
    parse_duration,
    spark_interval,
)

ROOT = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, environ: dict[str, str] | None = None, dotenv: str | None = None):
    env_file = tmp_path / ".env"
    if dotenv is not None:
        env_file.write_text(dotenv)
    return load_settings(environ=environ or {}, env_file=env_file)


def error_of(tmp_path: Path, environ: dict[str, str], dotenv: str | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ, dotenv)
    return str(caught.value)


# ---- defaults ---------------------------------------------------------------------------------


def test_defaults_are_the_seeds(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.environment == "development"
    assert settings.ingestion.wikimedia.url == "https://stream.wikimedia.org/v2/stream/recentchange"
    assert settings.ingestion.wikimedia.filters.namespaces == [0]
    assert settings.spark.windowing.duration == timedelta(minutes=1)
    assert settings.spark.windowing.watermark == timedelta(minutes=2)
    assert settings.spark.trigger.processing_time == timedelta(seconds=30)
    assert settings.postgres.port == 5433
    assert settings.postgres.database == "wiki_streaming"
    assert settings.postgres.user == "wiki_user"
    assert settings.postgres.runs_locally
    assert settings.kafka.runs_locally
    assert settings.home == ROOT / ".wikipulse"


def test_no_secret_in_the_defaults_file() -> None:
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    assert defaults["postgres"]["password"] == ""


def test_every_key_has_a_unique_environment_variable() -> None:
    assert len(ENV_VARS) == len(KEYS)
    for name in (
        "SPARK_WINDOWING_DURATION",
        "SPARK_TRIGGER_PROCESSING_TIME",
        "KAFKA_BOOTSTRAP_SERVERS",
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "INGESTION_WIKIMEDIA_URL",
        "SPARK_LOG_LEVEL",
        "WIKIPULSE_HOME",
        "ENVIRONMENT",
    ):
        assert name in ENV_VARS
    assert env_var_name(("spark", "trigger", "processing_time")) == "SPARK_TRIGGER_PROCESSING_TIME"


def test_every_key_is_in_the_defaults_file() -> None:
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    for path in KEYS:
        node = defaults
        for part in path:
            assert part in node, f"{'.'.join(path)} is missing from conf.yaml"
            node = node[part]


# ---- precedence: environment > .env > profile > defaults ---------------------------------------


def write_profile(directory: Path, name: str, content: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"conf.{name}.yaml"
    path.write_text(content)
    return path


def test_precedence_environment_over_dotenv_over_profile_over_defaults(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    write_profile(
        profiles,
        "staging",
        "spark:\n  windowing:\n    duration: 2 minutes\n    watermark: 4 minutes\n"
        "  trigger:\n    processing_time: 20 seconds\n"
        "postgres:\n  port: 6000\n",
    )
    dotenv = (
        "SPARK_WINDOWING_WATERMARK=5 minutes\nPOSTGRES_PORT=6001\nPOSTGRES_PASSWORD=from-dotenv\n"
    )
    environ = {
        "ENVIRONMENT": "staging",
        "WIKIPULSE_CONFIG_DIR": str(profiles),
        "POSTGRES_PORT": "6002",
    }
    settings = load(tmp_path, environ, dotenv)
    assert settings.environment == "staging"
    assert settings.spark.trigger.processing_time == timedelta(seconds=20)  # profile
    assert settings.spark.windowing.duration == timedelta(minutes=2)  # profile
    assert settings.spark.windowing.watermark == timedelta(minutes=5)  # .env over profile
    assert settings.postgres.port == 6002  # environment over .env
    assert settings.postgres.password.get_secret_value() == "from-dotenv"
    assert settings.postgres.database == "wiki_streaming"  # defaults


def test_environment_can_come_from_dotenv(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    write_profile(profiles, "qa", "postgres:\n  port: 7000\n")
    settings = load(
        tmp_path,
        {"WIKIPULSE_CONFIG_DIR": str(profiles)},
        "ENVIRONMENT=qa\nPOSTGRES_PASSWORD=x\n",
    )
    assert (settings.environment, settings.postgres.port) == ("qa", 7000)


def test_prod_profile_is_layered_over_defaults(tmp_path: Path) -> None:
    from tests.security.test_client_options import PROD_ENVIRONMENT

    settings = load(tmp_path, {"ENVIRONMENT": "prod", **PROD_ENVIRONMENT})
    assert settings.postgres.sslmode == "require"
    assert settings.kafka.replication_factor == 3
    assert settings.spark.windowing.duration == timedelta(minutes=1)


def test_seed_variable_names_are_accepted(tmp_path: Path) -> None:
    settings = load(tmp_path, {"POSTGRES_DB": "other_db", "KAFKA_BROKER": "10.0.0.5:9092"})
    assert settings.postgres.database == "other_db"
    assert settings.kafka.bootstrap_servers == "10.0.0.5:9092"
    assert not settings.kafka.runs_locally
    canonical = load(tmp_path, {"POSTGRES_DB": "seed", "POSTGRES_DATABASE": "canonical"})
    assert canonical.postgres.database == "canonical"


def test_list_values_from_the_environment(tmp_path: Path) -> None:
    filters = load(
        tmp_path,
        {
            "INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "[0, 14]",
            "INGESTION_WIKIMEDIA_FILTERS_WIKIS": "enwiki, dewiki",
            "INGESTION_WIKIMEDIA_FILTERS_TYPES": "",
        },
    ).ingestion.wikimedia.filters
    assert filters.namespaces == [0, 14]
    assert filters.wikis == ["enwiki", "dewiki"]
    assert filters.types == []


def test_external_postgres_is_not_run_locally(tmp_path: Path) -> None:
    settings = load(tmp_path, {"POSTGRES_HOST": "db.internal.example"})
    assert not settings.postgres.runs_locally
    forced = load(tmp_path, {"POSTGRES_MANAGED": "false"})
    assert not forced.postgres.runs_locally


def test_wikipulse_home_override(tmp_path: Path) -> None:
    settings = load(tmp_path, {"WIKIPULSE_HOME": str(tmp_path / "state")})
    assert settings.home == tmp_path / "state"
    assert settings.checkpoint_location == str(tmp_path / "state" / "spark" / "checkpoints")


# ---- validation: one message naming the key, the value and its source ---------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"SPARK_WINDOWING_DURATION": "5 mintues"},
            ["spark.windowing.duration", "'5 mintues'", "SPARK_WINDOWING_DURATION", "duration"],
        ),
        (
            {"SPARK_TRIGGER_PROCESSING_TIME": "soon"},
            ["spark.trigger.processing_time", "'soon'"],
        ),
        ({"POSTGRES_PORT": "70000"}, ["postgres.port", "'70000'", "65535"]),
        ({"POSTGRES_PORT": "0"}, ["postgres.port", "'0'"]),
        ({"APP_WEB_PORT": "http"}, ["app.web.port", "'http'"]),
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, ["kafka.bootstrap_servers", "'localhost'"]),
        ({"KAFKA_TOPICS_TYPED_PARTITIONS": "0"}, ["kafka.topics.typed.partitions", "'0'"]),
        ({"KAFKA_TOPICS_RAW_NAME": "bad name!"}, ["kafka.topics.raw.name", "'bad name!'"]),
        ({"SPARK_EXECUTOR_MEMORY": "lots"}, ["spark.executor.memory", "'lots'", "512m"]),
        ({"SPARK_LOG_LEVEL": "LOUD"}, ["spark.log_level", "'LOUD'"]),
        ({"POSTGRES_SSLMODE": "maybe"}, ["postgres.sslmode", "'maybe'"]),
        ({"INGESTION_WIKIMEDIA_FILTERS_TYPES": "edit,bogus"}, ["filters.types.1", "'bogus'"]),
        ({"INGESTION_WIKIMEDIA_FILTERS_NAMESPACES": "main"}, ["filters.namespaces.0", "'main'"]),
        ({"ENVIRONMENT": "Prod!"}, ["environment", "'Prod!'"]),
        ({"INGESTION_WIKIMEDIA_URL": "stream.wikimedia.org"}, ["ingestion.wikimedia.url"]),
        ({"POSTGRES_HOST": ""}, ["postgres.host", "''"]),
        ({"KAFKA_MANAGED": "sometimes"}, ["kafka.managed", "'sometimes'"]),
    ],
)
def test_bad_values_are_named(tmp_path: Path, environ: dict[str, str], expected: list[str]) -> None:
    message = error_of(tmp_path, environ)
    for fragment in expected:
        assert fragment in message


def test_empty_password_outside_development(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"ENVIRONMENT": "prod"})
    assert "postgres.password" in message and "POSTGRES_PASSWORD" in message
    assert load(tmp_path, {"ENVIRONMENT": "development"}).postgres.password.get_secret_value() == ""


def test_unknown_key_in_a_profile(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    write_profile(profiles, "staging", "kafka:\n  brokr: x:1\n")
    message = error_of(
        tmp_path,
        {"ENVIRONMENT": "staging", "WIKIPULSE_CONFIG_DIR": str(profiles), "POSTGRES_PASSWORD": "x"},
    )
    assert "kafka.brokr" in message and "unknown key" in message
    assert "conf.staging.yaml" in message


def test_missing_profile(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"ENVIRONMENT": "staging", "POSTGRES_PASSWORD": "x"})
    assert "conf.staging.yaml" in message


def test_profile_that_is_not_yaml(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    write_profile(profiles, "staging", "spark: [unclosed\n")
    message = error_of(
        tmp_path,
        {"ENVIRONMENT": "staging", "WIKIPULSE_CONFIG_DIR": str(profiles), "POSTGRES_PASSWORD": "x"},
    )
    assert "conf.staging.yaml" in message and "YAML" in message


def test_bad_value_in_dotenv_names_the_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, {}, "POSTGRES_PORT=five\n")
    assert "postgres.port" in message and ".env file variable POSTGRES_PORT" in message


def test_password_is_never_echoed(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    write_profile(profiles, "staging", "postgres:\n  password: [not, a, string]\n")
    message = error_of(
        tmp_path,
        {"ENVIRONMENT": "staging", "WIKIPULSE_CONFIG_DIR": str(profiles)},
    )
    assert "postgres.password" in message
    assert "not" not in message.split("postgres.password", 1)[1].split(":", 1)[0]


def test_durations() -> None:
    assert parse_duration("1 minute") == timedelta(minutes=1)
    assert parse_duration("30 seconds") == timedelta(seconds=30)
    assert parse_duration("500 ms") == timedelta(milliseconds=500)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1.5 minutes") == timedelta(seconds=90)
    for bad in ("", "minute", "0 seconds", "-1 minute", "5 fortnights", 5):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert spark_interval(timedelta(minutes=1)) == "60 seconds"
    assert spark_interval(timedelta(milliseconds=1500)) == "1500 milliseconds"


# ---- entry points stop with the message, no traceback -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "infra.cli", "status"],
        [sys.executable, "-m", "alembic", "current"],
    ],
    ids=["wikipulse-cli", "alembic"],
)
def test_entry_points_refuse_bad_configuration(
    command: list[str], subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "SPARK_WINDOWING_DURATION": "5 mintues"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "spark.windowing.duration = '5 mintues'" in result.stderr
    assert "SPARK_WINDOWING_DURATION" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_cluster_layout_layers_its_keys_under_the_rest(tmp_path: Path) -> None:
    single = load(tmp_path)
    assert single.wikipulse.layout == "single"
    assert single.kafka.local_nodes == [(1, "127.0.0.1", 9092, 9093)]
    cluster = load(tmp_path, {"WIKIPULSE_LAYOUT": "cluster"})
    assert cluster.kafka.local_nodes == [
        (1, "127.0.0.1", 9092, 9097),
        (2, "127.0.0.1", 9094, 9098),
        (3, "127.0.0.1", 9096, 9099),
    ]
    kafka = cluster.kafka
    assert (kafka.replication_factor, kafka.min_insync_replicas, kafka.topics.raw.partitions) == (
        3,
        2,
        3,
    )
    assert load(tmp_path, {}, "WIKIPULSE_LAYOUT=cluster\n").kafka.replication_factor == 3
    # Each of its keys is overridden like any other.
    moved = load(tmp_path, {"WIKIPULSE_LAYOUT": "cluster", "KAFKA_LOCAL_CONTROLLER_PORT": "19093"})
    assert [node[3] for node in moved.kafka.local_nodes] == [19093, 19094, 19095]
    assert "wikipulse.layout = 'ring'" in error_of(tmp_path, {"WIKIPULSE_LAYOUT": "ring"})


def test_the_cluster_layout_runs_a_standalone_spark_cluster(tmp_path: Path) -> None:
    single = load(tmp_path)
    assert (single.spark.master, single.spark.runs_local_cluster) == ("local[*]", False)
    spark = load(tmp_path, {"WIKIPULSE_LAYOUT": "cluster"}).spark
    assert spark.standalone_master == ("127.0.0.1", 7077)
    assert spark.runs_local_cluster
    assert (spark.local.workers, spark.local.worker_cores, spark.local.worker_memory) == (
        2, 1, "1g"
    )  # fmt: skip
    assert (spark.executor.instances, spark.executor.cores, spark.executor.memory) == (
        2, 1, "512m"
    )  # fmt: skip
    assert (single.app.workers, load(tmp_path, {"WIKIPULSE_LAYOUT": "cluster"}).app.workers) == (
        1, 2
    )  # fmt: skip
    # A standalone master elsewhere is the user's cluster: up runs none.
    remote = load(tmp_path, {"SPARK_MASTER": "spark://spark-master.internal:7077"}).spark
    assert remote.standalone_master == ("spark-master.internal", 7077)
    assert not remote.runs_local_cluster
    # Several masters (ZooKeeper recovery) are valid, and never local.
    several = load(tmp_path, {"SPARK_MASTER": "spark://127.0.0.1:7077,127.0.0.1:7078"}).spark
    assert several.standalone_master is None and not several.runs_local_cluster


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"SPARK_MASTER": "spark://127.0.0.1"},
            "spark.master = 'spark://127.0.0.1' (from environment variable SPARK_MASTER): "
            "a standalone master is spark://host:port[,host:port...]",
        ),
        (
            {"WIKIPULSE_LAYOUT": "cluster", "SPARK_EXECUTOR_CORES": "2"},
            "spark.executor.cores = 2 (from environment variable SPARK_EXECUTOR_CORES): more "
            "than a local worker offers (spark.local.worker_cores = 1)",
        ),
        (
            {"WIKIPULSE_LAYOUT": "cluster", "SPARK_EXECUTOR_MEMORY": "1536m"},
            "spark.executor.memory = '1536m' (from environment variable SPARK_EXECUTOR_MEMORY): "
            "more than a local worker offers (spark.local.worker_memory = 1g)",
        ),
        (
            {"WIKIPULSE_LAYOUT": "cluster", "SPARK_EXECUTOR_INSTANCES": "3"},
            "spark.executor.instances = 3 (from environment variable SPARK_EXECUTOR_INSTANCES): "
            "the 2 local worker(s) of 1 core(s) host at most 2 executor(s) of 1 core(s)",
        ),
    ],
)
def test_executors_the_local_workers_cannot_host_are_refused(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    assert message in error_of(tmp_path, environ)


def test_executors_of_a_remote_cluster_are_not_checked_here(tmp_path: Path) -> None:
    remote = {"SPARK_MASTER": "spark://spark-master.internal:7077"}
    settings = load(tmp_path, {**remote, "SPARK_EXECUTOR_MEMORY": "8g"})
    assert settings.spark.executor.memory == "8g"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"KAFKA_MIN_INSYNC_REPLICAS": "2"},
            "kafka.min_insync_replicas = 2 (from environment variable KAFKA_MIN_INSYNC_REPLICAS):"
            " more than kafka.replication_factor (1): no write with acks=all could succeed",
        ),
        (
            {"KAFKA_REPLICATION_FACTOR": "3"},
            "kafka.replication_factor = 3 (from environment variable KAFKA_REPLICATION_FACTOR): "
            "the local Kafka runs 1 broker(s), one per address of kafka.bootstrap_servers: list "
            "as many addresses as replicas, or lower it",
        ),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,127.0.0.1:9092"},
            "an address is listed twice: each local broker needs its own",
        ),
        (
            {"WIKIPULSE_LAYOUT": "cluster", "KAFKA_LOCAL_CONTROLLER_PORT": "9094"},
            "kafka.local.controller_port = 9094 (from environment variable "
            "KAFKA_LOCAL_CONTROLLER_PORT): the local controllers listen on 9094, 9095, 9096, "
            "which clashes with the brokers' port(s) 9094, 9096",
        ),
    ],
)
def test_replicas_no_broker_set_could_honour_are_refused(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    assert message in error_of(tmp_path, environ)


def test_external_brokers_may_have_any_replication(tmp_path: Path) -> None:
    settings = load(tmp_path, {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1.internal:9092",
                               "KAFKA_REPLICATION_FACTOR": "3"})  # fmt: skip
    assert not settings.kafka.runs_locally and settings.kafka.replication_factor == 3
