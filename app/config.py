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

import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import yaml
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)

CONF_DIR = Path(__file__).resolve().parent / "conf"
DEFAULTS_FILE = CONF_DIR / "conf.yaml"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Variables the loader reads besides the per-key overrides.
CONFIG_DIR_VAR = "WIKIPULSE_CONFIG_DIR"
ENV_FILE_VAR = "WIKIPULSE_ENV_FILE"

DEVELOPMENT = "development"


class ConfigError(Exception):
    """Invalid configuration. ``str(error)`` is the whole message meant for the user."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  {problem}" for problem in problems)
        )


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------

_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> timedelta:
    """Parse ``"1 minute"``, ``"30 seconds"``, ``"500 ms"``, ``"2h"`` into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and match.group(2).lower() in _UNITS:
            seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
            if seconds > 0:
                return timedelta(seconds=seconds)
    raise ValueError(
        "not a positive duration: write a number and a unit, e.g. '30 seconds', '1 minute', "
        "'500 ms', '2 hours'"
    )


def spark_interval(duration: timedelta) -> str:
    """A timedelta as an interval string that Spark's window/watermark/trigger accept."""
    millis = round(duration.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis} milliseconds"
    return f"{millis // 1000} seconds"


def _memory_size(value: Any) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"\d+[kmgt]?", text) or int(re.sub(r"\D", "", text)) == 0:
        raise ValueError("not a memory size: write e.g. '512m' or '2g'")
    return text


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
MemorySize = Annotated[str, BeforeValidator(_memory_size)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveInt = Annotated[int, Field(ge=1)]
EventType = Literal["edit", "new", "log", "categorize", "external"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# The settings model: one class per section of conf.yaml
# --------------------------------------------------------------------------------------------


class WikipulseSection(_Section):
    home: str = ""


class FiltersSettings(_Section):
    namespaces: list[int] = [0]
    wikis: list[str] = []
    types: list[EventType] = []


class WikimediaSettings(_Section):
    url: str
    contact: str = Field(min_length=1)
    filters: FiltersSettings = FiltersSettings()


class IngestionSettings(_Section):
    wikimedia: WikimediaSettings


class TopicSettings(_Section):
    name: str = Field(min_length=1, max_length=249, pattern=r"^[a-zA-Z0-9._-]+$")
    partitions: PositiveInt = 1


class TopicsSettings(_Section):
    raw: TopicSettings
    typed: TopicSettings
    dead_letter: TopicSettings


class RetentionSettings(_Section):
    ms: Annotated[int, Field(ge=-1)] = 604_800_000


class ProducerSettings(_Section):
    batch_size: PositiveInt = 16384
    linger_ms: Annotated[int, Field(ge=0)] = 5
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"


class LocalKafkaSettings(_Section):
    controller_port: Port = 9093
    heap: MemorySize = "512m"


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(min_length=1)
    client_id: str = "wikipulse"
    replication_factor: PositiveInt = 1
    topics: TopicsSettings
    retention: RetentionSettings = RetentionSettings()
    producer: ProducerSettings = ProducerSettings()
    managed: Literal["auto"] | bool = "auto"
    local: LocalKafkaSettings = LocalKafkaSettings()

    @property
    def runs_locally(self) -> bool:
        """Whether ./infra/wikipulse starts and stops the broker itself."""
        if self.managed != "auto":
            return bool(self.managed)
        return all(_is_loopback(host) for host, _ in self.servers)

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The bootstrap servers as (host, port) pairs."""
        pairs = []
        for item in self.bootstrap_servers.split(","):
            host, _, port = item.strip().rpartition(":")
            pairs.append((host.strip("[]"), int(port)))
        return pairs


class WindowingSettings(_Section):
    duration: Duration = timedelta(minutes=1)
    watermark: Duration = timedelta(minutes=2)


class TriggerSettings(_Section):
    processing_time: Duration = timedelta(seconds=30)


class CheckpointSettings(_Section):
    location: str = ""


class DriverSettings(_Section):
    memory: MemorySize = "1g"


class ExecutorSettings(_Section):
    memory: MemorySize = "1g"
    instances: PositiveInt = 1
    cores: PositiveInt = 1


class SparkSettings(_Section):
    master: str = Field("local[*]", min_length=1)
    app_name: str = "wikipulse-aggregates"
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", "TRACE"] = "WARN"
    windowing: WindowingSettings = WindowingSettings()
    trigger: TriggerSettings = TriggerSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    shuffle_partitions: Annotated[int, Field(ge=0)] = 0
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    driver: DriverSettings = DriverSettings()
    executor: ExecutorSettings = ExecutorSettings()

    @property
    def effective_shuffle_partitions(self) -> int:
        return self.shuffle_partitions or os.cpu_count() or 1


class PoolSettings(_Section):
    max_size: PositiveInt = 5


class PostgresSettings(_Section):
    host: str = Field(min_length=1)
    port: Port = 5433
    database: str = Field(min_length=1)
    user: str = Field(min_length=1)
    password: SecretStr = SecretStr("")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = (
        "prefer"
    )
    managed: Literal["auto"] | bool = "auto"
    retention_days: PositiveInt = 30
    pool: PoolSettings = PoolSettings()

    @property
    def runs_locally(self) -> bool:
        """Whether ./infra/wikipulse starts and stops this server itself."""
        if self.managed != "auto":
            return bool(self.managed)
        return _is_loopback(self.host)

    def libpq_params(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect``."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "application_name": "wikipulse",
        }
        if self.password.get_secret_value():
            params["password"] = self.password.get_secret_value()
        return params

    def sqlalchemy_url(self) -> Any:
        """A ``sqlalchemy.engine.URL`` (password escaped, never rendered in logs)."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2",
            username=self.user,
            password=self.password.get_secret_value() or None,
            host=self.host,
            port=self.port,
            database=self.database,
            query={"sslmode": self.sslmode, "application_name": "wikipulse"},
        )

    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}?sslmode={self.sslmode}"


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 6066


class AppSettings(_Section):
    web: WebSettings = WebSettings()


class DashboardSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 8501
    refresh_interval: Duration = timedelta(seconds=10)
    stale_after: Duration = timedelta(minutes=5)


class MonitoringSettings(_Section):
    enabled: bool = True


class Settings(_Section):
    environment: str = Field(DEVELOPMENT, pattern=r"^[a-z][a-z0-9_-]*$")
    wikipulse: WikipulseSection = WikipulseSection()
    ingestion: IngestionSettings
    kafka: KafkaSettings
    spark: SparkSettings = SparkSettings()
    postgres: PostgresSettings
    app: AppSettings = AppSettings()
    dashboard: DashboardSettings = DashboardSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    @property
    def home(self) -> Path:
        """``$WIKIPULSE_HOME``: the directory holding all local state."""
        if self.wikipulse.home:
            return Path(self.wikipulse.home).expanduser().resolve()
        if (PROJECT_ROOT / "pyproject.toml").exists():
            return PROJECT_ROOT / ".wikipulse"
        return Path.home() / ".local" / "state" / "wikipulse"

    @property
    def checkpoint_location(self) -> str:
        return self.spark.checkpoint.location or str(self.home / "spark" / "checkpoints")

    @property
    def is_development(self) -> bool:
        return self.environment == DEVELOPMENT


# --------------------------------------------------------------------------------------------
# Keys and their environment variables
# --------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _leaf_annotations(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[
    tuple[str, ...], Any
]:
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

    def merge_tree(self, tree: Mapping[str, Any], source: str, prefix: tuple[str, ...] = ()) -> None:
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
    raise ConfigError(
        [f"environment={environment!r}: no profile conf.{environment}.yaml in {searched}"]
    )


def _describe(value: Any, path: tuple[str | int, ...]) -> str:
    if "password" in str(path[-1] if path else ""):
        return "'***'" if value else "''"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _lookup(tree: Any, path: tuple[str | int, ...]) -> Any:
    node = tree
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _problems_from(error: ValidationError, layers: _Layered) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
        source = layers.source_of(loc)
        where = f" (from {source})" if source else ""
        value = _lookup(layers.values, loc)
        shown = "" if item["type"] == "missing" else f" = {_describe(value, loc)}"
        problems.append(f"{dotted(loc)}{shown}{where}: {message}")
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
