"""Checks of settings that validate one by one but not together: a password production needs,
TLS files that must exist, security options that contradict each other, development defaults that
production refuses. Each problem names its key, value and source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.config.clients import PRIVATE_KEY_KINDS, pem_blocks
from app.config.keys import Layered, describe, dotted, env_var_name, lookup
from app.config.settings import Settings
from app.config.values import memory_bytes


def semantic_problems(settings: Settings, layers: Layered) -> list[str]:
    problems = []
    if not settings.is_development and not settings.postgres.password.get_secret_value():
        problems.append(
            f"postgres.password is empty (environment={settings.environment!r}): set "
            "POSTGRES_PASSWORD in the environment or in .env; only development may run "
            "without a password"
        )
    try:
        servers = settings.kafka.servers
        if any(not host or port <= 0 or port > 65535 for host, port in servers):
            raise ValueError
    except ValueError:
        source = layers.source_of(("kafka", "bootstrap_servers"))
        problems.append(
            f"kafka.bootstrap_servers = {settings.kafka.bootstrap_servers!r} (from {source}): "
            "expected host:port[,host:port...]"
        )
    else:
        problems += _replica_problems(settings, layers)
    problems += _local_cluster_problems(settings, layers)
    return problems


def _local_cluster_problems(settings: Settings, layers: Layered) -> list[str]:
    """Executors the local standalone workers could not host: Spark would wait for them for
    ever ("Initial job has not accepted any resources")."""
    spark = settings.spark
    if not spark.runs_local_cluster:
        return []
    local, executor = spark.local, spark.executor
    problems = []
    if executor.cores > local.worker_cores:
        problems.append(_problem(
            layers, ("spark", "executor", "cores"), executor.cores,
            f"more than a local worker offers (spark.local.worker_cores = {local.worker_cores})",
        ))  # fmt: skip
    if memory_bytes(executor.memory) > memory_bytes(local.worker_memory):
        problems.append(_problem(
            layers, ("spark", "executor", "memory"), executor.memory,
            f"more than a local worker offers (spark.local.worker_memory = {local.worker_memory})",
        ))  # fmt: skip
    slots = local.workers * (local.worker_cores // executor.cores) if not problems else 0
    if not problems and executor.instances > slots:
        problems.append(_problem(
            layers, ("spark", "executor", "instances"), executor.instances,
            f"the {local.workers} local worker(s) of {local.worker_cores} core(s) host at most "
            f"{slots} executor(s) of {executor.cores} core(s)",
        ))  # fmt: skip
    return problems


def _replica_problems(settings: Settings, layers: Layered) -> list[str]:
    """Replicas and in-sync minimums no broker set could honour; local brokers that clash."""
    kafka = settings.kafka
    problems = []
    if kafka.min_insync_replicas > kafka.replication_factor:
        problems.append(_problem(
            layers, ("kafka", "min_insync_replicas"), kafka.min_insync_replicas,
            f"more than kafka.replication_factor ({kafka.replication_factor}): no write "
            "with acks=all could succeed",
        ))  # fmt: skip
    if not kafka.runs_locally:
        return problems
    nodes = kafka.local_nodes
    if kafka.replication_factor > len(nodes):
        problems.append(_problem(
            layers, ("kafka", "replication_factor"), kafka.replication_factor,
            f"the local Kafka runs {len(nodes)} broker(s), one per address of "
            "kafka.bootstrap_servers: list as many addresses as replicas, or lower it",
        ))  # fmt: skip
    brokers = [(host, port) for _, host, port, _ in nodes]
    if len(set(brokers)) < len(brokers):
        problems.append(_problem(
            layers, ("kafka", "bootstrap_servers"), kafka.bootstrap_servers,
            "an address is listed twice: each local broker needs its own",
        ))  # fmt: skip
    controllers = {port for *_, port in nodes}
    clashes = sorted(controllers & {port for _, port in brokers})
    if clashes:
        problems.append(_problem(
            layers, ("kafka", "local", "controller_port"), kafka.local.controller_port,
            f"the local controllers listen on {', '.join(map(str, sorted(controllers)))}, "
            f"which clashes with the brokers' port(s) {', '.join(map(str, clashes))}",
        ))  # fmt: skip
    return problems


def _problem(layers: Layered, path: tuple[str, ...], value: Any, reason: str) -> str:
    """``key = value (from source): reason``, the value masked if it is a secret."""
    source = layers.source_of(path)
    where = f" (from {source})" if source else ""
    return f"{dotted(path)} = {describe(value, path)}{where}: {reason}"


def _pem_file_problem(path: Path, kinds: tuple[str, ...], what: str) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if not pem_blocks(text, *kinds):
        return f"no {what} in it (PEM, -----BEGIN {kinds[0]}-----)"
    return None


def security_problems(settings: Settings, layers: Layered) -> list[str]:
    """Kafka SASL/SSL and PostgreSQL TLS settings that cannot work together."""
    problems = []
    kafka = settings.kafka
    protocol = kafka.security_protocol
    sasl, files = kafka.sasl, kafka.ssl
    for name, value in (("username", sasl.username), ("password", sasl.password)):
        path = ("kafka", "sasl", name)
        given = value.get_secret_value() if isinstance(value, SecretStr) else value
        if kafka.uses_sasl and not given:
            problems.append(
                f"{dotted(path)} is empty (kafka.security_protocol={protocol!r}): set "
                f"{env_var_name(path)} in the environment or in .env"
            )
        elif given and not kafka.uses_sasl:
            problems.append(
                _problem(
                    layers,
                    path,
                    given,
                    f"kafka.security_protocol={protocol!r} sends no credentials: use "
                    "SASL_SSL (or SASL_PLAINTEXT), or leave it empty",
                )
            )
    pem_kinds = {
        "cafile": (("CERTIFICATE",), "certificate"),
        "certfile": (("CERTIFICATE",), "certificate"),
        "keyfile": (PRIVATE_KEY_KINDS, "unencrypted PKCS#8 private key"),
    }
    for name, (kinds, what) in pem_kinds.items():
        path = ("kafka", "ssl", name)
        value = getattr(files, name)
        if not value:
            continue
        wrong: str | None = (
            f"kafka.security_protocol={protocol!r} uses no TLS: use SSL or SASL_SSL"
            if not kafka.uses_ssl
            else _pem_file_problem(Path(value), kinds, what)
        )
        if wrong:
            problems.append(_problem(layers, path, value, wrong))
    if kafka.uses_ssl and files.keyfile and not files.certfile:
        problems.append(
            _problem(
                layers,
                ("kafka", "ssl", "keyfile"),
                files.keyfile,
                "a key without its certificate: set kafka.ssl.certfile too",
            )
        )
    if kafka.uses_ssl and files.certfile and not files.keyfile:
        keyless = _pem_file_problem(Path(files.certfile), PRIVATE_KEY_KINDS, "private key")
        if keyless:
            problems.append(
                _problem(
                    layers,
                    ("kafka", "ssl", "certfile"),
                    files.certfile,
                    f"{keyless}: set kafka.ssl.keyfile to the certificate's unencrypted PKCS#8 "
                    "key (openssl pkcs8 -topk8 -nocrypt converts others)",
                )
            )
    rootcert = settings.postgres.sslrootcert
    if rootcert and rootcert != "system":
        unreadable = _pem_file_problem(Path(rootcert), ("CERTIFICATE",), "certificate")
        if unreadable:
            problems.append(_problem(layers, ("postgres", "sslrootcert"), rootcert, unreadable))
    return problems


#: Values anyone can read in conf.yaml, .env.example or the seed's README.
DEVELOPMENT_PASSWORDS = frozenset({"wiki_password", "change-me"})
DEVELOPMENT_USERS = frozenset({"wiki_user"})
WEAK_SSLMODES = frozenset({"disable", "allow", "prefer"})
UNENCRYPTED_KAFKA = frozenset({"PLAINTEXT", "SASL_PLAINTEXT"})


def development_defaults(settings: Settings, layers: Layered) -> list[str]:
    """ENVIRONMENT=prod refuses what only suits a developer's machine, naming each key."""
    problems = []
    kafka, pg = settings.kafka, settings.postgres
    if pg.password.get_secret_value() in DEVELOPMENT_PASSWORDS:
        problems.append(
            _problem(
                layers,
                ("postgres", "password"),
                pg.password,
                "a published development password; set POSTGRES_PASSWORD to a secret one",
            )
        )
    if pg.user in DEVELOPMENT_USERS:
        problems.append(
            _problem(
                layers,
                ("postgres", "user"),
                pg.user,
                "the development user; give production its own (POSTGRES_USER)",
            )
        )
    if pg.sslmode in WEAK_SSLMODES:
        problems.append(
            _problem(
                layers,
                ("postgres", "sslmode"),
                pg.sslmode,
                "an unencrypted connection is possible; use require, verify-ca or verify-full",
            )
        )
    if kafka.security_protocol in UNENCRYPTED_KAFKA:
        problems.append(
            _problem(
                layers,
                ("kafka", "security_protocol"),
                kafka.security_protocol,
                "unencrypted; use SASL_SSL (or SSL with a client certificate)",
            )
        )
    local = (
        (kafka.runs_locally, kafka.managed, ("kafka", "bootstrap_servers"), "broker", "brokers"),
        (pg.runs_locally, pg.managed, ("postgres", "host"), "PostgreSQL server", "server"),
    )
    for runs_locally, managed, address, what, theirs in local:
        if not runs_locally:
            continue
        section = address[0]
        if managed is True:
            path: tuple[str, ...] = (section, "managed")
            value: Any = True
        else:
            path, value = address, lookup(layers.values, address)
        problems.append(
            _problem(
                layers,
                path,
                value,
                f"./infra/wikipulse would run its local single-node development {what}; point "
                f"{dotted(address)} at your {theirs} ({env_var_name(address)}), or set "
                f"{section}.managed=false if you run the {theirs} on this host yourself",
            )
        )
    return problems
