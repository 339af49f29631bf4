"""Real connections through the project's own code to a TLS-only PostgreSQL and to a broker's
SASL_PLAINTEXT, SASL_SSL and SSL (client certificate) listeners (tests/security/conftest.py):
what works with the right configuration, and what is refused with the wrong one."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import psycopg2
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from app.config.clients import libpq_params
from app.config.settings import Settings
from app.ingest.resume import Takeover
from app.ingest.task import ingest_producer, read_takeover
from dashboards.database import make_engine
from infra.lag import consumer_lag
from infra.migrations import migrate, schema_revision
from infra.processes import InfraError
from infra.topics import ensure_topics, list_topics
from tests.security.conftest import KAFKA_PASSWORD, Certs, SecureServices

SSL_QUERY = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


# ---- PostgreSQL over TLS -------------------------------------------------------------------------


def test_alembic_migrates_over_verified_tls(secure_services: SecureServices) -> None:
    settings = secure_services.settings()
    seen: list[dict[str, Any]] = []

    def record(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.append(dict(cparams))

    event.listen(Engine, "do_connect", record)
    try:
        migrate(settings)  # alembic upgrade head, through alembic/env.py
        current, head = schema_revision(settings)
    finally:
        event.remove(Engine, "do_connect", record)
    assert current == head is not None
    assert seen and all(p["sslmode"] == "verify-full" for p in seen)
    # The server accepts TLS connections only (hostssl), and logs each one.
    log = secure_services.postgres.logfile.read_text()
    assert "application_name=wikipulse SSL enabled (protocol=TLS" in log


def test_the_dashboard_engine_reads_over_tls(secure_services: SecureServices) -> None:
    engine = make_engine(secure_services.settings().postgres)
    try:
        with engine.connect() as connection:
            ssl, version = connection.execute(text(SSL_QUERY)).one()
    finally:
        engine.dispose()
    assert ssl is True and version.startswith("TLS")


def test_the_spark_sink_and_infra_connect_over_tls(secure_services: SecureServices) -> None:
    connection = psycopg2.connect(**libpq_params(secure_services.settings().postgres))
    try:
        with connection.cursor() as cursor:
            cursor.execute(SSL_QUERY)
            assert cursor.fetchone()[0] is True
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"POSTGRES_SSLMODE": "disable"}, "no encryption"),
        ({"POSTGRES_SSLROOTCERT": "{other_ca}"}, "certificate verify failed"),
    ],
    ids=["without-tls", "unknown-ca"],
)
def test_postgres_refuses_what_is_not_verified_tls(
    secure_services: SecureServices, certs: Certs, overrides: dict[str, str], refusal: str
) -> None:
    values = {k: v.format(other_ca=certs.other_ca) for k, v in overrides.items()}
    params = libpq_params(secure_services.settings(**values).postgres)
    with pytest.raises(psycopg2.OperationalError, match=refusal):
        psycopg2.connect(**params).close()


# ---- Kafka: SASL_PLAINTEXT, SASL_SSL, SSL with a client certificate ------------------------------


def listener_settings(services: SecureServices, listener: str, **overrides: str) -> Settings:
    suffix = f"{listener.lower()}-{uuid.uuid4().hex[:8]}"
    return services.settings(
        **{
            **services.kafka_environ(listener),
            "KAFKA_TOPICS_RAW_NAME": f"raw-{suffix}",
            "KAFKA_TOPICS_TYPED_NAME": f"typed-{suffix}",
            "KAFKA_TOPICS_DEAD_LETTER_NAME": f"dead-{suffix}",
            **overrides,
        }
    )


async def append_and_read_back(settings: Settings, sse_id: str) -> Takeover:
    """The worker's ingest producer appends two raw records, the second sent when the first was
    durable; its resume reader reads them back (app.ingest.task.read_takeover)."""
    producer = ingest_producer(settings)
    await producer.start()
    raw = settings.kafka.topics.raw.name
    try:
        first = await producer.send_and_wait(
            raw, b"{}", headers=[("sse-id", sse_id.encode()), ("resume-id", b""),
                                 ("resume-time", b"0")]
        )  # fmt: skip
        await producer.send_and_wait(
            raw, b"{}", headers=[("sse-id", b"next"), ("resume-id", sse_id.encode()),
                                 ("resume-time", str(first.timestamp).encode())]
        )  # fmt: skip
    finally:
        await producer.stop()
    return await read_takeover(settings)


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL", "SSL"])
def test_kafka_clients_produce_and_consume(
    secure_services: SecureServices, listener: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = listener_settings(secure_services, listener)
    created = ensure_topics(settings)  # ./infra/wikipulse's admin client
    assert settings.kafka.topics.raw.name in created
    assert settings.kafka.topics.raw.name in list_topics(settings)
    sse_id = f'[{{"topic":"{listener}","partition":0,"offset":7}}]'
    with caplog.at_level(logging.DEBUG):
        takeover = asyncio.run(append_and_read_back(settings, sse_id))
    assert (takeover.point.id, takeover.written) == (sse_id, {"next"})
    # aiokafka logs each request at DEBUG; the SASL PLAIN one (the password) is redacted.
    assert KAFKA_PASSWORD not in caplog.text
    if listener.startswith("SASL_"):
        assert "<SaslAuthenticateRequest_v1: redacted>" in caplog.text
    # infra/lag.py's admin and consumer (a new broker creates its group coordinator on the
    # first request: that answer may come a moment later).
    lags = consumer_lag(settings)
    for _ in range(20):
        if lags and all(lag.error is None for lag in lags):
            break
        time.sleep(0.5)
        lags = consumer_lag(settings)
    assert lags and all(lag.error is None for lag in lags), [lag.error for lag in lags]


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_wrong_kafka_password_is_refused_clearly(
    secure_services: SecureServices, listener: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + KAFKA_PASSWORD[::-1]
    settings = listener_settings(secure_services, listener, KAFKA_SASL_PASSWORD=wrong)
    with (
        caplog.at_level(logging.ERROR, logger="aiokafka"),
        pytest.raises(InfraError, match="could not create the topics on") as caught,
    ):
        ensure_topics(settings)
    logged = caplog.text
    # aiokafka logs the broker's answer; the exception says that nothing could connect.
    assert "SaslAuthenticationFailed" in logged
    assert "Invalid username or password" in logged
    assert "Unable to bootstrap" in str(caught.value)
    assert wrong not in logged + str(caught.value)
    assert KAFKA_PASSWORD not in logged + str(caught.value)


@pytest.mark.parametrize(
    ("listener", "overrides", "logged"),
    [
        ("SASL_SSL", {"KAFKA_SSL_CAFILE": "{other_ca}"}, "CERTIFICATE_VERIFY_FAILED"),
        ("SSL", {"KAFKA_SSL_CERTFILE": "", "KAFKA_SSL_KEYFILE": ""}, "Unable connect"),
    ],
    ids=["unknown-ca", "no-client-certificate"],
)
def test_kafka_refuses_what_is_not_verified_tls(
    secure_services: SecureServices,
    certs: Certs,
    caplog: pytest.LogCaptureFixture,
    listener: str,
    overrides: dict[str, str],
    logged: str,
) -> None:
    values = {k: v.format(other_ca=certs.other_ca) for k, v in overrides.items()}
    settings = listener_settings(secure_services, listener, **values)
    with (
        caplog.at_level(logging.ERROR, logger="aiokafka"),
        pytest.raises(InfraError, match="could not create the topics"),
    ):
        ensure_topics(settings)
    assert logged in caplog.text
