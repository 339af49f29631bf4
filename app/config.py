"""One configuration for every wikipulse component.

Sources, highest precedence first:

1. the process environment, one variable per key, named by the key's path in upper case joined
   with ``_`` (``spark.windowing.duration`` -> ``SPARK_WINDOWING_DURATION``);
2. the same variables in a ``.env`` file in the working directory;
3. the profile ``conf.<ENVIRONMENT>.yaml`` (from ``WIKIPULSE_CONFIG_DIR`` or ``app/conf/``);
4. the defaults, ``app/conf/conf.yaml``.

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
from pydantic import BaseModel, ValidationError

from app.settings import DEVELOPMENT, Settings, parse_duration, spark_interval

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

    environment = environ.get("ENVIRONMENT") or dotenv.get("ENVIRONMENT")
    environment = environment or str(layers.values.get("environment") or DEVELOPMENT)
    profile = _profile_file(environment.strip(), environ)
    if profile is not None:
        layers.merge_tree(_read_yaml(profile), f"profile {profile.name}")

    for origin, variables in ((f"{env_file.name} file", dotenv), ("environment", environ)):
        for table in (ENV_ALIASES, ENV_VARS):
            for name, path in table.items():
                if name in variables:
                    raw = variables[name]
                    layers.set(path, _parse_env_value(path, raw), f"{origin} variable {name}")

    try:
        settings = Settings.model_validate(layers.values)
    except ValidationError as error:
        raise ConfigError(_problems_from(error, layers)) from None
    problems = _semantic_problems(settings, layers)
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


__all__ = [
    "ENV_VARS",
    "KEYS",
    "ConfigError",
    "Settings",
    "get_settings",
    "load_settings",
    "load_settings_or_exit",
    "parse_duration",
    "spark_interval",
]
