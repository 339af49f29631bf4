"""Fixtures of the dashboard's tests: scratch databases on the session's PostgreSQL, migrated by
Alembic and seeded with the known rows of :mod:`tests.dashboards.seed`; the app's environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg2
import pytest
import streamlit as st

from app.config import ENV_ALIASES, ENV_VARS, Settings
from app.config.clients import libpq_params
from infra.stack import Stack
from tests import harness
from tests.dashboards import seed

OURS = set(ENV_VARS) | set(ENV_ALIASES) | {"WIKIPULSE_CONFIG_DIR", "WIKIPULSE_ENV_FILE"}


@contextmanager
def scratch_database(
    stack: Stack, stack_env: dict[str, str], *, migrate: bool = True
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """tests.harness.scratch_database (migrated to head unless ``migrate`` is false): its
    settings and the environment that selects it, for the dashboard's processes."""
    with harness.scratch_database(stack, stack_env, "head" if migrate else None) as settings:
        yield settings, {**stack_env, "POSTGRES_DATABASE": settings.postgres.database}


def execute(settings: Settings, statement: str, params: object = None) -> list[tuple]:
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


@pytest.fixture(scope="module")
def seeded(stack: Stack, stack_env: dict[str, str]) -> Iterator[tuple[Settings, dict[str, str]]]:
    """One database per test module, migrated to head, holding :mod:`seed`'s rows."""
    with scratch_database(stack, stack_env) as (settings, environ):
        seed.insert(settings)
        yield settings, environ


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """Streamlit's caches are per process: every test starts (and ends) without them."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def use_environ(
    monkeypatch: pytest.MonkeyPatch, fresh_caches: None
) -> Callable[[dict[str, str]], None]:
    """Make the app (loaded in this process by AppTest) read this configuration."""

    def use(environ: dict[str, str]) -> None:
        import os

        for name in OURS & set(os.environ):
            monkeypatch.delenv(name)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        st.cache_data.clear()
        st.cache_resource.clear()

    return use


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Set the dashboard's clock (``dashboards.view.utcnow``)."""
    from dashboards import view

    def freeze(moment: datetime) -> None:
        monkeypatch.setattr(view, "utcnow", lambda: moment)

    freeze(seed.NOW)
    return freeze
