"""How the configuration of every wikipulse component is loaded (exported by :mod:`app.config`).

Sources, highest precedence first:

1. the process environment, one variable per key, named by the key's path in upper case joined
   with ``_`` (``spark.windowing.duration`` -> ``SPARK_WINDOWING_DURATION``);
2. the same variables in a ``.env`` file in the working directory;
3. the profile ``conf.<ENVIRONMENT>.yaml`` (from ``WIKIPULSE_CONFIG_DIR`` or
   ``app/config/conf/``);
4. the layout's keys, ``app/config/conf/layout.cluster.yaml`` when ``wikipulse.layout`` (set in
   any of the sources above or below) is ``cluster``;
5. the defaults, ``app/config/conf/conf.yaml``.

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
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import ValidationError

from app.config.keys import (
    ENV_ALIASES,
    ENV_VARS,
    KEYS,
    SECRET_KEYS,
    Layered,
    describe,
    dotted,
    env_var_name,
    lookup,
    parse_env_value,
)
from app.config.policy import development_defaults, security_problems, semantic_problems
from app.config.settings import CLUSTER, DEVELOPMENT, PRODUCTION, Settings

CONF_DIR = Path(__file__).resolve().parent / "conf"
DEFAULTS_FILE = CONF_DIR / "conf.yaml"
#: The keys of the cluster layout (``wikipulse.layout: cluster``).
CLUSTER_LAYOUT_FILE = CONF_DIR / "layout.cluster.yaml"
LAYOUT_KEY = ("wikipulse", "layout")

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
# Loading
# --------------------------------------------------------------------------------------------


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


def _secrets_in_yaml(layers: Layered) -> list[str]:
    """A problem for each secret a YAML file sets (its value is dropped, never shown)."""
    problems = []
    for path in SECRET_KEYS:
        value = lookup(layers.values, path)
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


def _key_location(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """A pydantic error location without union/validator tags: the key path plus list indexes."""
    for length in range(len(loc), 0, -1):
        if tuple(loc[:length]) in KEYS:
            return (*loc[:length], *(part for part in loc[length:] if isinstance(part, int)))
    return loc


def _problems_from(error: ValidationError, layers: Layered) -> list[str]:
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
        value = lookup(layers.values, loc)
        shown = "" if kinds[loc] == "missing" else f" = {describe(value, loc)}"
        problems.append(f"{dotted(loc)}{shown}{where}: {'; or '.join(texts)}")
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

    layers = Layered()
    layers.merge_tree(_read_yaml(DEFAULTS_FILE), f"defaults {DEFAULTS_FILE.name}")
    problems = _secrets_in_yaml(layers)

    environment = environ.get("ENVIRONMENT") or dotenv.get("ENVIRONMENT")
    environment = environment or str(layers.values.get("environment") or DEVELOPMENT)
    profile = _profile_file(environment.strip(), environ)
    profile_values = _read_yaml(profile) if profile is not None else {}

    layout_var = env_var_name(LAYOUT_KEY)
    layout = environ.get(layout_var) or dotenv.get(layout_var) or lookup(profile_values, LAYOUT_KEY)
    if str(layout or lookup(layers.values, LAYOUT_KEY)).strip() == CLUSTER:
        layers.merge_tree(_read_yaml(CLUSTER_LAYOUT_FILE), f"layout {CLUSTER_LAYOUT_FILE.name}")
        problems += _secrets_in_yaml(layers)
    if profile is not None:
        layers.merge_tree(profile_values, f"profile {profile.name}")
        problems += _secrets_in_yaml(layers)

    for origin, variables in ((f"{env_file.name} file", dotenv), ("environment", environ)):
        for table in (ENV_ALIASES, ENV_VARS):
            for name, path in table.items():
                if name in variables:
                    raw = variables[name]
                    layers.set(path, parse_env_value(path, raw), f"{origin} variable {name}")

    try:
        settings = Settings.model_validate(layers.values)
    except ValidationError as error:
        raise ConfigError(problems + _problems_from(error, layers)) from None
    problems += semantic_problems(settings, layers)
    problems += security_problems(settings, layers)
    if settings.environment == PRODUCTION:
        problems += development_defaults(settings, layers)
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
    """(key, environment variable, default) for every key: infra/README.md's configuration table."""
    defaults = _read_yaml(DEFAULTS_FILE)
    return [(dotted(path), env_var_name(path), lookup(defaults, path)) for path in KEYS]
