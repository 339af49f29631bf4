"""One configuration for every wikipulse component.

- :mod:`app.config.settings`: the typed settings, one pydantic model per section of
  ``conf/conf.yaml``;
- :mod:`app.config.loading`: where the values come from (``conf/conf.yaml``, the
  ``ENVIRONMENT`` profile, ``.env``, the environment), their validation and policy checks;
- :mod:`app.config.clients`: the client options built from them, for Kafka and PostgreSQL;
- ``conf/``: the defaults and the profiles (YAML).

The names other parts use are exported here: ``from app.config import Settings, load_settings``.
"""

from app.config.loading import (
    DEFAULTS_FILE,
    ENV_ALIASES,
    ENV_VARS,
    KEYS,
    ConfigError,
    env_var_name,
    get_settings,
    key_table,
    load_settings,
    load_settings_or_exit,
)
from app.config.settings import Settings, parse_duration, spark_interval

__all__ = [
    "DEFAULTS_FILE",
    "ENV_ALIASES",
    "ENV_VARS",
    "KEYS",
    "ConfigError",
    "Settings",
    "env_var_name",
    "get_settings",
    "key_table",
    "load_settings",
    "load_settings_or_exit",
    "parse_duration",
    "spark_interval",
]
