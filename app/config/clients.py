"""How every wikipulse client connects to Kafka and PostgreSQL: the one place that turns the
configuration into client options.

- :func:`aiokafka_options`: the worker's ingest producer and resume reader, the normalizer's
  consumer, producers, admin and restore reader, and ``./infra/wikipulse``'s admin and lag
  clients (``kafka.bootstrap_servers``, ``kafka.security_protocol``, ``kafka.sasl.*``,
  ``kafka.ssl.*``); :func:`producer_options` adds what every producer shares (acks,
  idempotence, ``kafka.producer.*``).
- :func:`faust_broker_options`: the Faust app (its broker URL and ``broker_credentials``).
- :func:`spark_kafka_options`: the Spark job's Kafka source (``kafka.*`` options: security
  protocol, SASL mechanism and JAAS configuration, PEM trust and key stores given inline, so
  executors need no local files).
- :func:`libpq_params` and :func:`sqlalchemy_url`: psycopg2 (the Spark sink, retention,
  ``./infra/wikipulse``) and SQLAlchemy (Alembic, the dashboard): host, port, database, user,
  password, ``sslmode`` and ``sslrootcert``; libpq itself does the TLS.

Secrets (``postgres.password``, ``kafka.sasl.password``) are ``SecretStr`` in the settings and
are unwrapped here only, into the options handed to the client libraries.
"""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from app.config.settings import KafkaSettings, PostgresSettings

APPLICATION_NAME = "wikipulse"

#: The JAAS login module of each SASL mechanism, for Java clients (Spark's Kafka source).
JAAS_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)
#: The one private key format that both Python's ssl and Java's PEM key store read: PKCS#8,
#: unencrypted (``openssl pkcs8 -topk8 -nocrypt`` converts others).
PRIVATE_KEY_KINDS = ("PRIVATE KEY",)


# ---- Kafka -----------------------------------------------------------------------------------

#: Kafka's API key of SaslAuthenticate requests and responses.
SASL_AUTHENTICATE_API_KEY = 36


class SaslRedaction(logging.Filter):
    """aiokafka logs every request and response at DEBUG, SASL authentication bytes included
    (with the PLAIN mechanism, those hold the password): show a placeholder instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_sasl_authenticate(arg) for arg in args):
            record.args = tuple(
                f"<{type(arg).__name__}: redacted>" if _is_sasl_authenticate(arg) else arg
                for arg in args
            )
        return True


def _is_sasl_authenticate(value: object) -> bool:
    return getattr(value, "API_KEY", None) == SASL_AUTHENTICATE_API_KEY


def redact_sasl_in_client_logs() -> None:
    """Install :class:`SaslRedaction` on aiokafka's connection logger (once)."""
    logger = logging.getLogger("aiokafka.conn")
    if not any(isinstance(existing, SaslRedaction) for existing in logger.filters):
        logger.addFilter(SaslRedaction())


def kafka_ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of the Python clients (``None`` without SSL): the brokers' certificates
    are checked against ``kafka.ssl.cafile`` (or the system's CAs), with their host names;
    ``kafka.ssl.certfile``/``keyfile`` is the client certificate for mutual TLS."""
    if not kafka.uses_ssl:
        return None
    from aiokafka.helpers import create_ssl_context

    files = kafka.ssl
    context: ssl.SSLContext = create_ssl_context(
        cafile=files.cafile or None,
        certfile=files.certfile or None,
        keyfile=files.keyfile or None,
    )
    return context


def aiokafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for every aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.uses_sasl:
        redact_sasl_in_client_logs()
        options["sasl_mechanism"] = kafka.sasl.mechanism
        options["sasl_plain_username"] = kafka.sasl.username
        options["sasl_plain_password"] = kafka.sasl.password.get_secret_value()
    if kafka.uses_ssl:
        options["ssl_context"] = kafka_ssl_context(kafka)
    return options


def producer_options(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for every aiokafka producer (the ingest task's, the normalizer's):
    :func:`aiokafka_options`, acks from every replica, idempotence, and ``kafka.producer.*``
    and ``kafka.max_message_bytes``; ``overrides`` (``client_id``, ``transactional_id``) last."""
    producer = kafka.producer
    return {
        **aiokafka_options(kafka),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if producer.compression == "none" else producer.compression,
        "linger_ms": producer.linger_ms,
        "max_batch_size": producer.batch_size,
        "max_request_size": kafka.max_message_bytes,
        **overrides,
    }


def faust_broker_options(kafka: KafkaSettings) -> dict[str, Any]:
    """``faust.App`` keyword arguments: ``broker`` and ``broker_credentials``."""
    import faust

    options: dict[str, Any] = {
        "broker": [f"kafka://{host}:{port}" for host, port in kafka.servers],
    }
    context = kafka_ssl_context(kafka)
    if kafka.uses_sasl:
        redact_sasl_in_client_logs()
        # With an SSL context Faust speaks SASL_SSL, without it SASL_PLAINTEXT.
        options["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl.username,
            password=kafka.sasl.password.get_secret_value(),
            mechanism=kafka.sasl.mechanism,
            ssl_context=context,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def jaas_config(kafka: KafkaSettings) -> str:
    """``sasl.jaas.config`` for a Java Kafka client (values quoted and escaped)."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (
        f"{JAAS_LOGIN_MODULES[kafka.sasl.mechanism]} required"
        f" username={quoted(kafka.sasl.username)}"
        f" password={quoted(kafka.sasl.password.get_secret_value())};"
    )


def pem_blocks(text: str, *kinds: str) -> list[str]:
    """The PEM blocks of ``text`` whose type is one of ``kinds`` (e.g. ``"CERTIFICATE"``)."""
    return [match.group(0) for match in _PEM_BLOCK.finditer(text) if match.group(1) in kinds]


def spark_kafka_options(kafka: KafkaSettings) -> dict[str, str]:
    """The ``kafka.*`` options of Spark's Kafka source (the Java client's configuration).

    Certificates and the client key are given inline in PEM (``ssl.truststore.certificates``,
    ``ssl.keystore.certificate.chain``, ``ssl.keystore.key``): the executors read no file. The
    Java client verifies the brokers' host names by default, like the Python clients.
    """
    options = {
        "kafka.bootstrap.servers": kafka.bootstrap_servers,
        "kafka.security.protocol": kafka.security_protocol,
    }
    if kafka.uses_sasl:
        options["kafka.sasl.mechanism"] = kafka.sasl.mechanism
        options["kafka.sasl.jaas.config"] = jaas_config(kafka)
    if kafka.uses_ssl:
        files = kafka.ssl
        if files.cafile:
            cas = pem_blocks(Path(files.cafile).read_text(), "CERTIFICATE")
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.certificates"] = "\n".join(cas)
        if files.certfile:
            chain = pem_blocks(Path(files.certfile).read_text(), "CERTIFICATE")
            key_text = Path(files.keyfile or files.certfile).read_text()
            options["kafka.ssl.keystore.type"] = "PEM"
            options["kafka.ssl.keystore.certificate.chain"] = "\n".join(chain)
            options["kafka.ssl.keystore.key"] = "\n".join(pem_blocks(key_text, *PRIVATE_KEY_KINDS))
    return options


#: Spark redacts the option values whose key or value matches this in plans, logs and its UI
#: (its default, plus the inline private key and the JAAS configuration).
SPARK_REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|keystore[.]key|jaas"


# ---- PostgreSQL ------------------------------------------------------------------------------


def libpq_params(postgres: PostgresSettings) -> dict[str, Any]:
    """Keyword arguments for ``psycopg2.connect`` (libpq connection parameters)."""
    params: dict[str, Any] = {
        "host": postgres.host,
        "port": postgres.port,
        "dbname": postgres.database,
        "user": postgres.user,
        "sslmode": postgres.sslmode,
        "application_name": APPLICATION_NAME,
    }
    if postgres.sslrootcert:
        params["sslrootcert"] = postgres.sslrootcert
    if postgres.password.get_secret_value():
        params["password"] = postgres.password.get_secret_value()
    return params


def sqlalchemy_url(postgres: PostgresSettings) -> URL:
    """A ``sqlalchemy.engine.URL`` with the same parameters (its ``repr`` and
    ``render_as_string()`` hide the password)."""
    from sqlalchemy.engine import URL

    query = {"sslmode": postgres.sslmode, "application_name": APPLICATION_NAME}
    if postgres.sslrootcert:
        query["sslrootcert"] = postgres.sslrootcert
    return URL.create(
        "postgresql+psycopg2",
        username=postgres.user,
        password=postgres.password.get_secret_value() or None,
        host=postgres.host,
        port=postgres.port,
        database=postgres.database,
        query=query,
    )
