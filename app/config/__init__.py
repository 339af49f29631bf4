"""One configuration for every wikipulse component.

- :mod:`app.config.settings`: the typed settings, one pydantic model per section of
  ``conf/conf.yaml``; :mod:`app.config.values`: their value types (durations, memory sizes);
- :mod:`app.config.keys`: the keys, their environment variables, the layered values;
- :mod:`app.config.loading`: where the values come from (``conf/conf.yaml``, the
  ``ENVIRONMENT`` profile, ``.env``, the environment) and their validation;
- :mod:`app.config.policy`: checks of settings that are only wrong together;
- :mod:`app.config.names`: every name derived from the settings;
- :mod:`app.config.clients`: the client options built from them, for Kafka and PostgreSQL;
- ``conf/``: the defaults and the profiles (YAML).

The names other parts use are exported here: ``from app.config import Settings, load_settings``.
"""

from app.config.keys import ENV_ALIASES, ENV_VARS, KEYS, env_var_name
from app.config.loading import (
    DEFAULTS_FILE,
    ConfigError,
    get_settings,
    key_table,
    load_settings,
    load_settings_or_exit,
)
from app.config.settings import Settings
from app.config.values import parse_duration, spark_interval

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
