"""How the configuration of every wikipulse component is loaded (exported by :mod:`app.config`).

Sources, highest precedence first:

1. the process environment, one variable per key, named by the key's path in upper case joined
   with ``_`` (``spark.windowing.duration`` -> ``SPARK_WINDOWING_DURATION``);
2. the same variables in a ``.env`` file in the working directory;
3. the profile ``conf.<ENVIRONMENT>.yaml`` (from ``WIKIPULSE_CONFIG_DIR`` or
   ``app/config/conf/``);
4. the defaults, ``app/config/conf/conf.yaml``.

The merged values are validated by pydantic. Any problem raises :class:`ConfigError`, whose
message names each offending key, its value and where the value came from. Entry points call
:func:`load_settings_or_exit`, which prints that message and exits with status 2, no traceback.

This module is the only place in wikipulse that reads environment variables.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, get_origin

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, SecretStr, ValidationError

from app.config.clients import PRIVATE_KEY_KINDS, pem_blocks
from app.config.settings import DEVELOPMENT, PRODUCTION, Settings

CONF_DIR = Path(__file__).resolve().parent / "conf"
DEFAULTS_FILE = CONF_DIR / "conf.yaml"

#: Variables the loader reads besides the per-key overrides.
CONFIG_DIR_VAR = "WIKIPULSE_CONFIG_DIR"
ENV_FILE_VAR = "WIKIPULSE_ENV_FILE"


class ConfigError(Exception):
    """Invalid configuration. ``str(error)`` is the whole message meant for the user."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  {problem}" for problem in problems)
        )


# --------------------------------------------------------------------------------------------
# Keys and their environment variables
# --------------------------------------------------------------------------------------------


def _leaf_annotations(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
    leaves: dict[tuple[str, ...], Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.update(_leaf_annotations(annotation, (*prefix, name)))
        else:
            leaves[(*prefix, name)] = annotation
    return leaves


#: Every configuration key (as a path) and its type annotation.
KEYS: dict[tuple[str, ...], Any] = _leaf_annotations(Settings)


def env_var_name(path: tuple[str, ...]) -> str:
    return "_".join(path).upper()


#: The secrets: read from the environment or .env only, refused in a YAML file.
SECRET_KEYS: tuple[tuple[str, ...], ...] = tuple(
    path for path, annotation in KEYS.items() if annotation is SecretStr
)

#: Environment variable -> key path, e.g. "SPARK_WINDOWING_DURATION" -> ("spark", ...).
ENV_VARS: dict[str, tuple[str, ...]] = {env_var_name(path): path for path in KEYS}

#: Names the seed's README and .env used; the canonical name wins when both are set.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "POSTGRES_DB": ("postgres", "database"),
    "KAFKA_BROKER": ("kafka", "bootstrap_servers"),
}


def dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path)


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def _parse_env_value(path: tuple[str, ...], raw: str) -> Any:
    """Environment values are strings; lists are JSON/YAML flow lists or comma-separated."""
    if _is_list(KEYS[path]):
        text = raw.strip()
        if text.startswith("["):
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError:
                return raw  # validation reports it with the key
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class _Layered:
    """A nested dict of values plus, for each leaf path, a description of its source."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[tuple[str, ...], str] = {}

    def merge_tree(
        self, tree: Mapping[str, Any], source: str, prefix: tuple[str, ...] = ()
    ) -> None:
        for key, value in tree.items():
            path = (*prefix, str(key))
            if isinstance(value, Mapping) and path not in KEYS:
                self.merge_tree(value, source, path)
            else:
                self.set(path, value, source)

    def set(self, path: tuple[str, ...], value: Any, source: str) -> None:
        node = self.values
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        self.sources[path] = source

    def source_of(self, path: tuple[str | int, ...]) -> str | None:
        for length in range(len(path), 0, -1):
            found = self.sources.get(tuple(str(p) for p in path[:length]))
            if found:
                return found
        return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError([f"cannot read {path}: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"{path} is not valid YAML: {error}"]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([f"{path} must hold a mapping of sections, not {type(loaded).__name__}"])
    return loaded


def _secrets_in_yaml(layers: _Layered) -> list[str]:
    """A problem for each secret a YAML file sets (its value is dropped, never shown)."""
    problems = []
    for path in SECRET_KEYS:
        value = _lookup(layers.values, path)
        if value in (None, ""):
            continue
        problems.append(
            f"{dotted(path)} (from {layers.source_of(path)}): a secret is never read from a "
            f"YAML file; set {env_var_name(path)} in the environment or in .env"
        )
        layers.set(path, "", f"{layers.source_of(path)} (refused)")
    return problems


def _profile_file(environment: str, environ: Mapping[str, str]) -> Path | None:
    directories = [Path(environ[CONFIG_DIR_VAR])] if environ.get(CONFIG_DIR_VAR) else []
    directories.append(CONF_DIR)
    for directory in directories:
        candidate = directory / f"conf.{environment}.yaml"
        if candidate.is_file():
            return candidate
    if environment == DEVELOPMENT:
        return None  # development runs on the defaults alone
    searched = " or ".join(str(d) for d in directories)
    problem = f"environment = {environment!r} (ENVIRONMENT): no profile conf.{environment}.yaml"
    raise ConfigError([f"{problem} in {searched}"])


def _describe(value: Any, path: tuple[str | int, ...]) -> str:
    if "password" in str(path[-1] if path else ""):
        return "'***'" if value else "''"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _lookup(tree: Any, path: tuple[str | int, ...]) -> Any:
    node = tree
    for part in path:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
        else:
            return None
    return node


def _key_location(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """A pydantic error location without union/validator tags: the key path plus list indexes."""
    for length in range(len(loc), 0, -1):
        if tuple(loc[:length]) in KEYS:
            return (*loc[:length], *(part for part in loc[length:] if isinstance(part, int)))
    return loc


def _problems_from(error: ValidationError, layers: _Layered) -> list[str]:
    messages: dict[tuple[str | int, ...], list[str]] = {}
    kinds: dict[tuple[str | int, ...], str] = {}
    for item in error.errors(include_url=False):
        loc = _key_location(tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
        messages.setdefault(loc, []).append(message)
        kinds.setdefault(loc, item["type"])
    problems = []
    for loc, texts in messages.items():
        source = layers.source_of(loc)
        where = f" (from {source})" if source else ""
        value = _lookup(layers.values, loc)
        shown = "" if kinds[loc] == "missing" else f" = {_describe(value, loc)}"
        problems.append(f"{dotted(loc)}{shown}{where}: {'; or '.join(texts)}")
    return problems


def _semantic_problems(settings: Settings, layers: _Layered) -> list[str]:
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
    return problems


def _problem(layers: _Layered, path: tuple[str, ...], value: Any, reason: str) -> str:
    """``key = value (from source): reason``, the value masked if it is a secret."""
    source = layers.source_of(path)
    where = f" (from {source})" if source else ""
    return f"{dotted(path)} = {_describe(value, path)}{where}: {reason}"


def _pem_file_problem(path: Path, kinds: tuple[str, ...], what: str) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if not pem_blocks(text, *kinds):
        return f"no {what} in it (PEM, -----BEGIN {kinds[0]}-----)"
    return None


def _security_problems(settings: Settings, layers: _Layered) -> list[str]:
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


def _development_defaults(settings: Settings, layers: _Layered) -> list[str]:
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
            path, value = address, _lookup(layers.values, address)
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


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | str | None = None
) -> Settings:
    """Merge defaults, profile, ``.env`` and environment; validate; raise ConfigError."""
    environ = os.environ if environ is None else environ
    if env_file is None:
        env_file = environ.get(ENV_FILE_VAR) or Path.cwd() / ".env"
    env_file = Path(env_file)
    dotenv: dict[str, str] = {}
    if env_file.is_file():
        dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None}

    layers = _Layered()
    layers.merge_tree(_read_yaml(DEFAULTS_FILE), f"defaults {DEFAULTS_FILE.name}")
    problems = _secrets_in_yaml(layers)

    environment = environ.get("ENVIRONMENT") or dotenv.get("ENVIRONMENT")
    environment = environment or str(layers.values.get("environment") or DEVELOPMENT)
    profile = _profile_file(environment.strip(), environ)
    if profile is not None:
        layers.merge_tree(_read_yaml(profile), f"profile {profile.name}")
        problems += _secrets_in_yaml(layers)

    for origin, variables in ((f"{env_file.name} file", dotenv), ("environment", environ)):
        for table in (ENV_ALIASES, ENV_VARS):
            for name, path in table.items():
                if name in variables:
                    raw = variables[name]
                    layers.set(path, _parse_env_value(path, raw), f"{origin} variable {name}")

    try:
        settings = Settings.model_validate(layers.values)
    except ValidationError as error:
        raise ConfigError(problems + _problems_from(error, layers)) from None
    problems += _semantic_problems(settings, layers)
    problems += _security_problems(settings, layers)
    if settings.environment == PRODUCTION:
        problems += _development_defaults(settings, layers)
    if problems:
        raise ConfigError(problems)
    return settings


def load_settings_or_exit(component: str = "wikipulse") -> Settings:
    """For entry points: the settings, or the error message on stderr and exit status 2."""
    try:
        return load_settings()
    except ConfigError as error:
        sys.stderr.write(f"{component}: {error}\n")
        raise SystemExit(2) from None


@cache
def get_settings() -> Settings:
    """The process-wide settings (loaded once)."""
    return load_settings_or_exit()


def key_table() -> list[tuple[str, str, Any]]:
    """(key, environment variable, default) for every key: the README's configuration table."""
    defaults = _read_yaml(DEFAULTS_FILE)
    return [(dotted(path), env_var_name(path), _lookup(defaults, path)) for path in KEYS]
