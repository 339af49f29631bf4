"""Alembic environment: the database comes from wikipulse's shared configuration.

Callers that already hold a ``Settings`` (``./infra/wikipulse``, the tests) pass it as
``config.attributes["settings"]``; the ``alembic`` command line loads it like every other
component does (defaults, profile, .env, environment).
"""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import create_engine, pool

from alembic import context
from app.config import Settings, load_settings_or_exit
from app.config.clients import sqlalchemy_url

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

settings: Settings = config.attributes.get("settings") or load_settings_or_exit("alembic")
# Host, credentials, sslmode and sslrootcert: the same URL as every other client's.
url = sqlalchemy_url(settings.postgres)

# Migrations are written by hand (views, partial indexes); there is no ORM metadata.
target_metadata = None


def run_migrations_offline() -> None:
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
