"""Every client gets the configured security: the real client objects, built by the project's
code, with SASL_SSL (SCRAM-SHA-512, a CA and a client certificate) and sslmode=verify-full.
No broker or server is needed: nothing here connects (tests/security/test_secured_services.py
does). Also: secrets stay out of reprs and messages, YAML may not hold them, the prod profile
refuses the development defaults, and the web servers listen on loopback by default."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from sqlalchemy import event
from sqlalchemy.engine import Engine

from alembic import command
from app.config import ConfigError, load_settings
from app.config.clients import (
    SPARK_REDACTION_REGEX,
    aiokafka_options,
    jaas_config,
    libpq_params,
    sqlalchemy_url,
)
from app.config.settings import Settings
from app.ingest.task import ingest_producer, resume_consumer
from app.worker import Worker
from dashboards.database import make_engine
from infra.migrations import alembic_config
from infra.postgres import psql_command
from spark.job import kafka_source_options
from spark.session import session_conf
from spark.sink import PostgresSink
from tests.security.conftest import Certs

ROOT = Path(__file__).resolve().parents[2]
PG_PASSWORD = "pg-Options-91e3"
SASL_PASSWORD = 'sasl-Options-"quoted"\\-5d7a'


def secured(certs: Certs, tmp_path: Path, **overrides: str) -> Settings:
    environ = {
        "ENVIRONMENT": "development",
        "WIKIPULSE_HOME": str(tmp_path / "home"),
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-1.example:9093,kafka-2.example:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "pipeline",
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "KAFKA_SSL_CAFILE": str(certs.ca),
        "KAFKA_SSL_CERTFILE": str(certs.client),
        "KAFKA_SSL_KEYFILE": str(certs.client_key),
        "POSTGRES_HOST": "db.example",
        "POSTGRES_PASSWORD": PG_PASSWORD,
        "POSTGRES_SSLMODE": "verify-full",
        "POSTGRES_SSLROOTCERT": str(certs.ca),
        **overrides,
    }
    return load_settings(environ=environ, env_file=tmp_path / "no.env")


# ---- Kafka: aiokafka clients of the worker and the normalizer --------------------------------


def assert_secured_client(client: Any, certs: Certs) -> None:
    """An aiokafka ``AIOKafkaClient`` (``producer.client``, ``consumer._client``,
    ``admin._client``) that will speak SASL_SSL with SCRAM-SHA-512, verifying the brokers."""
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert client._sasl_plain_username == "pipeline"
    assert client._sasl_plain_password == SASL_PASSWORD
    assert client._bootstrap_servers == "kafka-1.example:9093,kafka-2.example:9093"
    context = client._ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any("wikipulse test ca" in str(ca["subject"]) for ca in context.get_ca_certs())


async def test_every_worker_client_gets_sasl_and_tls(certs: Certs, tmp_path: Path) -> None:
    settings = secured(certs, tmp_path)
    worker = Worker(settings)

    # The Faust app (its consumer group, producer and topic admin).
    credentials = worker.app.conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    assert (credentials.username, credentials.password) == ("pipeline", SASL_PASSWORD)
    assert credentials.ssl_context is not None and credentials.ssl_context.check_hostname
    faust_auth = credentials_to_aiokafka_auth(credentials)  # what Faust hands aiokafka
    assert faust_auth["security_protocol"] == "SASL_SSL"
    assert faust_auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert [str(url) for url in worker.app.conf.broker] == [
        "kafka://kafka-1.example:9093",
        "kafka://kafka-2.example:9093",
    ]

    # The ingest producer and the resume reader.
    producer = ingest_producer(settings)
    resume = resume_consumer(settings)
    # The normalizer's clients: one transactional producer per raw partition, the consumer in
    # its group, the admin that creates the changelog, the changelog's restore reader.
    normalizer = worker.normalizer
    transactional = normalizer._producer(0)
    consumer = normalizer._consumer()
    admin = normalizer._admin()
    restore = normalizer._restore_reader()
    try:
        for client in (
            producer.client,
            resume._client,
            transactional.client,
            consumer._client,
            admin._client,
            restore._client,
        ):
            assert_secured_client(client, certs)
        assert transactional._txn_manager is not None  # still the transactional producer
    finally:
        for closing in (producer, transactional):
            await closing.stop()
        for stopping in (resume, consumer, restore):
            await stopping.stop()
        await admin.close()


def test_options_per_security_protocol(certs: Certs, tmp_path: Path) -> None:
    plain = aiokafka_options(secured(certs, tmp_path, **unsecured_kafka()).kafka)
    assert plain == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}

    sasl_plaintext = aiokafka_options(
        secured(
            certs,
            tmp_path,
            **{
                **unsecured_kafka(),
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            },
        ).kafka
    )
    assert sasl_plaintext["sasl_mechanism"] == "SCRAM-SHA-512"
    assert sasl_plaintext["sasl_plain_username"] == "u" and "ssl_context" not in sasl_plaintext

    mutual = secured(certs, tmp_path, KAFKA_SECURITY_PROTOCOL="SSL", **no_sasl())
    options = aiokafka_options(mutual.kafka)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    worker = Worker(mutual)
    assert isinstance(worker.app.conf.broker_credentials, SSLCredentials)


def unsecured_kafka() -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        **no_sasl(),
        "KAFKA_SSL_CAFILE": "",
        "KAFKA_SSL_CERTFILE": "",
        "KAFKA_SSL_KEYFILE": "",
    }


def no_sasl() -> dict[str, str]:
    return {"KAFKA_SASL_USERNAME": "", "KAFKA_SASL_PASSWORD": ""}


# ---- Kafka: the Spark job's source -------------------------------------------------------------


def test_the_spark_source_gets_sasl_and_inline_pem(certs: Certs, tmp_path: Path) -> None:
    settings = secured(certs, tmp_path)
    options = kafka_source_options(settings)  # what spark.job.read_typed_topic passes
    assert options["kafka.bootstrap.servers"] == "kafka-1.example:9093,kafka-2.example:9093"
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="pipeline" password="sasl-Options-\\"quoted\\"\\\\-5d7a";'
    )
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["kafka.ssl.truststore.certificates"] == certs.ca.read_text().strip()
    assert options["kafka.ssl.keystore.type"] == "PEM"
    assert options["kafka.ssl.keystore.certificate.chain"] == certs.client.read_text().strip()
    assert options["kafka.ssl.keystore.key"] == certs.client_key.read_text().strip()
    assert options["kafka.ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert options["kafka.client.id"] == "wikipulse-spark"
    # Spark redacts an option whose key or value matches spark.redaction.regex: the job sets
    # it so that the JAAS configuration and the private key never show in plans or logs.
    assert session_conf(settings)["spark.redaction.regex"] == SPARK_REDACTION_REGEX
    redaction = re.compile(SPARK_REDACTION_REGEX)
    for key in ("kafka.sasl.jaas.config", "kafka.ssl.keystore.key"):
        assert redaction.search(key) or redaction.search(options[key]), key


def test_jaas_config_per_mechanism(certs: Certs, tmp_path: Path) -> None:
    plain = secured(certs, tmp_path, KAFKA_SASL_MECHANISM="PLAIN", KAFKA_SASL_PASSWORD="pw")
    assert jaas_config(plain.kafka) == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="pipeline" password="pw";'
    )
    scram = secured(certs, tmp_path, KAFKA_SASL_MECHANISM="SCRAM-SHA-256")
    assert "ScramLoginModule" in jaas_config(scram.kafka)
    assert kafka_source_options(scram)["kafka.sasl.mechanism"] == "SCRAM-SHA-256"


# ---- PostgreSQL: Alembic, the dashboard, the Spark sink, infra ----------------------------------


class Captured(Exception):
    """Raised by the connect hook: the parameters are seen, no connection is made."""


def connect_params(connect: Any, target: Any = Engine) -> dict[str, Any]:
    """The keyword arguments SQLAlchemy passes to ``psycopg2.connect`` when ``connect()`` runs
    (seen through SQLAlchemy's ``do_connect`` event, which then stops the attempt)."""
    seen: dict[str, Any] = {}

    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise Captured

    event.listen(target, "do_connect", capture)
    try:
        with pytest.raises(Captured):
            connect()
    finally:
        event.remove(target, "do_connect", capture)
    return seen


def test_every_postgres_client_gets_sslmode_and_root_cert(certs: Certs, tmp_path: Path) -> None:
    settings = secured(certs, tmp_path)
    expected = {"sslmode": "verify-full", "sslrootcert": str(certs.ca), "password": PG_PASSWORD}

    # Alembic (alembic/env.py builds its engine from the settings it is given).
    alembic = connect_params(lambda: command.current(alembic_config(settings)))
    assert {k: alembic[k] for k in expected} == expected
    assert (alembic["host"], alembic["user"]) == ("db.example", "wiki_user")

    # The dashboard's engine.
    engine = make_engine(settings.postgres)
    try:
        dashboard = connect_params(engine.connect, engine)
    finally:
        engine.dispose()
    assert {k: dashboard[k] for k in expected} == expected
    assert dashboard["application_name"] == "wikipulse-dashboard"
    url = sqlalchemy_url(settings.postgres)
    assert PG_PASSWORD not in str(url) and PG_PASSWORD not in repr(url)

    # psycopg2: the Spark sink, the retention, ./infra/wikipulse.
    sink = PostgresSink(settings.postgres, query_name="q")
    assert {k: sink._params[k] for k in expected} == expected
    assert libpq_params(settings.postgres)["password"] == PG_PASSWORD

    # psql (./infra/wikipulse psql): libpq's environment variables.
    try:
        _, env = psql_command(settings, [])
    except Exception as error:  # no psql on this machine: InfraError
        pytest.fail(f"psql_command: {error}")
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == str(certs.ca)
    assert env["PGPASSWORD"] == PG_PASSWORD


# ---- secrets: masked in reprs and messages, refused in YAML -------------------------------------


def test_settings_never_show_a_secret(certs: Certs, tmp_path: Path) -> None:
    settings = secured(certs, tmp_path)
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.kafka.sasl),
        repr(Worker(settings).app.conf.broker_credentials),
    ):
        assert PG_PASSWORD not in text
        assert "sasl-Options" not in text


def test_config_errors_mask_secrets(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        secured(certs, tmp_path, KAFKA_SECURITY_PROTOCOL="SSL")  # credentials without SASL
    message = str(caught.value)
    assert "kafka.sasl.password = '***' (from environment variable KAFKA_SASL_PASSWORD)" in message
    assert "kafka.sasl.username = 'pipeline'" in message
    assert "sasl-Options" not in message


@pytest.mark.parametrize(
    ("where", "key", "variable"),
    [
        ("postgres:\n  password: {secret}\n", "postgres.password", "POSTGRES_PASSWORD"),
        ("kafka:\n  sasl:\n    password: {secret}\n", "kafka.sasl.password", "KAFKA_SASL_PASSWORD"),
    ],
)
def test_a_secret_in_yaml_is_refused(tmp_path: Path, where: str, key: str, variable: str) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "conf.staging.yaml").write_text(where.format(secret="yaml-Secret-0f3a"))
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={
                "ENVIRONMENT": "staging",
                "WIKIPULSE_CONFIG_DIR": str(profiles),
                "POSTGRES_PASSWORD": "from-the-environment",
            },
            env_file=tmp_path / "no.env",
        )
    message = str(caught.value)
    assert f"{key} (from profile conf.staging.yaml): a secret is never read from a YAML file" in (
        message
    )
    assert variable in message
    assert "yaml-Secret-0f3a" not in message


def test_the_defaults_file_holds_no_secret() -> None:
    text = (ROOT / "app" / "config" / "conf" / "conf.yaml").read_text()
    assert re.search(r"^  password: \"\"", text, re.M)  # postgres.password
    assert re.search(r"^    password: \"\"", text, re.M)  # kafka.sasl.password


# ---- the prod profile refuses the development defaults ------------------------------------------


def load_prod(tmp_path: Path, **environ: str) -> Settings:
    return load_settings(environ={"ENVIRONMENT": "prod", **environ}, env_file=tmp_path / "no.env")


def prod_message(tmp_path: Path, **environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_prod(tmp_path, **environ)
    return str(caught.value)


def test_prod_refuses_each_development_default_by_name(tmp_path: Path) -> None:
    message = prod_message(tmp_path)
    for fragment in (
        "postgres.password is empty",
        "postgres.user = 'wiki_user' (from defaults conf.yaml)",
        "kafka.sasl.username is empty (kafka.security_protocol='SASL_SSL')",
        "kafka.sasl.password is empty",
        "kafka.bootstrap_servers = '127.0.0.1:9092' (from defaults conf.yaml)",
        "postgres.host = '127.0.0.1' (from defaults conf.yaml)",
    ):
        assert fragment in message

    message = prod_message(
        tmp_path,
        POSTGRES_PASSWORD="wiki_password",
        POSTGRES_SSLMODE="prefer",
        KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
        KAFKA_MANAGED="true",
        POSTGRES_MANAGED="true",
    )
    for fragment in (
        "postgres.password = '***' (from environment variable POSTGRES_PASSWORD): a published "
        "development password",
        "postgres.sslmode = 'prefer' (from environment variable POSTGRES_SSLMODE)",
        "kafka.security_protocol = 'PLAINTEXT' (from environment variable "
        "KAFKA_SECURITY_PROTOCOL): unencrypted",
        "kafka.managed = True (from environment variable KAFKA_MANAGED)",
        "postgres.managed = True (from environment variable POSTGRES_MANAGED)",
    ):
        assert fragment in message
    assert "wiki_password" not in message
    sasl_plaintext = prod_message(tmp_path, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT")
    assert "kafka.security_protocol = 'SASL_PLAINTEXT'" in sasl_plaintext


PROD_ENVIRONMENT = {
    "POSTGRES_HOST": "db.internal",
    "POSTGRES_USER": "wikipulse_prod",
    "POSTGRES_PASSWORD": "a-real-secret",
    "KAFKA_BOOTSTRAP_SERVERS": "k1.internal:9093,k2.internal:9093",
    "KAFKA_SASL_USERNAME": "wikipulse",
    "KAFKA_SASL_PASSWORD": "another-real-secret",
}


def test_prod_accepts_a_production_configuration(tmp_path: Path) -> None:
    settings = load_prod(tmp_path, **PROD_ENVIRONMENT)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.postgres.sslmode == "require"
    assert not settings.kafka.runs_locally and not settings.postgres.runs_locally
    # A broker or server that runs on this host, but not as ./infra/wikipulse's local one.
    local = load_prod(
        tmp_path,
        **{**PROD_ENVIRONMENT, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_MANAGED": "false"},
    )
    assert local.postgres.host == "127.0.0.1"


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "infra.cli", "status"],
        [sys.executable, "-m", "alembic", "current"],
        [sys.executable, "-m", "spark.job", "--available-now"],
    ],
    ids=["wikipulse-cli", "alembic", "spark-job"],
)
def test_prod_with_development_defaults_exits_2(
    command: list[str], subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "ENVIRONMENT": "prod", "POSTGRES_PASSWORD": "change-me"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    for key in (
        "postgres.password = '***'",
        "postgres.user = 'wiki_user'",
        "kafka.sasl.username is empty",
        "kafka.sasl.password is empty",
        "kafka.bootstrap_servers = '127.0.0.1:",
        "postgres.host = '127.0.0.1'",
    ):
        assert key in result.stderr, key
    assert "postgres.sslmode" not in result.stderr  # the prod profile's require stands
    assert "change-me" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


# ---- the web servers listen on loopback unless configured otherwise -----------------------------


def test_web_servers_default_to_loopback(tmp_path: Path) -> None:
    defaults = load_settings(environ={}, env_file=tmp_path / "no.env")
    assert defaults.app.web.host == "127.0.0.1"
    assert defaults.dashboard.host == "127.0.0.1"
    environ = {"WIKIPULSE_HOME": str(tmp_path / "home")}
    worker = Worker(load_settings(environ=environ, env_file=tmp_path / "no.env"))
    assert worker.app.conf.web_bind == "127.0.0.1"
    everywhere = Worker(
        load_settings(environ={**environ, "APP_WEB_HOST": "0.0.0.0"}, env_file=tmp_path / "x")
    )
    assert everywhere.app.conf.web_bind == "0.0.0.0"
