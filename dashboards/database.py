"""The dashboard's one way into PostgreSQL: a read-only engine, and the errors the page shows
when the database cannot answer (down, or not migrated)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.config.clients import sqlalchemy_url
from app.config.settings import PostgresSettings


class DashboardError(Exception):
    """A problem the page shows as a message; ``str(error)`` says what to do."""


class DatabaseUnavailable(DashboardError):
    """PostgreSQL cannot be reached (down, wrong address or password)."""


class SchemaMissing(DashboardError):
    """The database lacks the dashboard's tables: it was not migrated to the code's head."""


def make_engine(postgres: PostgresSettings) -> Engine:
    """An engine on the configured database: read-only sessions, short timeouts, no JIT (it
    costs more than these small queries take), UTC."""
    options = (
        "-c default_transaction_read_only=on -c statement_timeout=15000 -c jit=off -c TimeZone=UTC"
    )
    return create_engine(
        sqlalchemy_url(postgres),  # host, credentials, sslmode, sslrootcert
        pool_size=postgres.pool.max_size,
        max_overflow=0,
        pool_timeout=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 3,
            "application_name": "wikipulse-dashboard",
            "options": options,
        },
    )


def _describe(error: SQLAlchemyError) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


_SCHEMA_CODES = {"42P01", "42703", "42883"}  # undefined table, column, function


def fetch_rows(engine: Engine, statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(statement), dict(params))]
    except DBAPIError as error:
        if getattr(error.orig, "pgcode", None) in _SCHEMA_CODES:
            raise SchemaMissing(
                "the database has no dashboard tables yet (" + _describe(error) + "): "
                "migrate it with `./infra/wikipulse up` (alembic upgrade head)"
            ) from None
        url = engine.url
        raise DatabaseUnavailable(
            f"PostgreSQL at {url.host}:{url.port} (database {url.database}) cannot be read: "
            f"{_describe(error)}"
        ) from None
    except SQLAlchemyError as error:
        raise DatabaseUnavailable(f"PostgreSQL cannot be read: {_describe(error)}") from None
