"""Alembic on the configured database: upgrade it, and read its revision against the code's."""

from __future__ import annotations

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from alembic import command
from app.config import Settings
from app.config.clients import sqlalchemy_url
from infra.home import PROJECT_ROOT

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(settings: Settings) -> Config:
    """alembic.ini, on the database of ``settings`` (alembic/env.py reads them from here)."""
    config = Config(str(ALEMBIC_INI))
    config.attributes["settings"] = settings
    config.attributes["skip_logging_config"] = True
    return config


def migrate(settings: Settings, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on the configured database."""
    command.upgrade(alembic_config(settings), revision)


def schema_revision(settings: Settings) -> tuple[str | None, str | None]:
    """(current revision of the database, head revision of the code)."""
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    engine = create_engine(
        sqlalchemy_url(settings.postgres), pool_pre_ping=True, connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return current, head
