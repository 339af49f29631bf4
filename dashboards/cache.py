"""Streamlit's caching, a thin layer for the page: the settings and the one engine per process
(``st.cache_resource``), the functions of :mod:`dashboards.queries` with their results reused
for :data:`CACHE_TTL` per distinct view, and the worker's ``/health`` read over HTTP
(:func:`app.health.fetch_health`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from app.config import ConfigError, Settings, load_settings, load_settings_or_exit
from app.health import fetch_health, health_url
from dashboards import database, queries
from dashboards.queries import Activity, Bounds, Editors, PipelineHealth
from dashboards.view import Span

#: How long a query result is reused (per distinct view) before it is read again.
CACHE_TTL = timedelta(seconds=5)
#: The wiki filter's options change only when a wiki is seen for the first time.
WIKIS_TTL = timedelta(minutes=1)
#: The worker's /health answers within this (seconds) or counts as unreachable.
HEARTBEAT_TIMEOUT = 1.0

_TTL = CACHE_TTL.total_seconds()


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The dashboard's settings (``SystemExit`` with the message on stderr when invalid)."""
    return load_settings_or_exit("dashboard")


def configuration_problems() -> list[str]:
    """Each offending key of an invalid configuration, for the page (none when it is valid)."""
    try:
        load_settings()
    except ConfigError as error:
        return error.problems
    return []


@st.cache_resource(show_spinner=False)
def engine() -> Engine:
    """The app's one engine (and connection pool)."""
    return database.make_engine(settings().postgres)


@st.cache_data(ttl=_TTL, show_spinner=False)
def bounds() -> Bounds:
    return queries.bounds(engine())


@st.cache_data(ttl=WIKIS_TTL.total_seconds(), show_spinner=False)
def wikis() -> list[str]:
    return queries.wikis(engine())


@st.cache_data(ttl=_TTL, show_spinner=False)
def activity(span: Span, wikis: tuple[str, ...]) -> Activity:
    return queries.activity(engine(), span=span, wikis=wikis)


@st.cache_data(ttl=_TTL, show_spinner=False)
def active_editors(span: Span) -> Editors:
    return queries.active_editors(engine(), span=span)


@st.cache_data(ttl=_TTL, show_spinner=False)
def timeline(span: Span, wikis: tuple[str, ...]) -> pd.DataFrame:
    return queries.timeline(engine(), span=span, wikis=wikis)


@st.cache_data(ttl=_TTL, show_spinner=False)
def top_contributors(span: Span, bots: bool) -> pd.DataFrame:
    return queries.top_contributors(engine(), span=span, bots=bots)


@st.cache_data(ttl=_TTL, show_spinner=False)
def top_wikis(span: Span, wikis: tuple[str, ...], bots: bool) -> pd.DataFrame:
    return queries.top_wikis(engine(), span=span, wikis=wikis, bots=bots)


@st.cache_data(ttl=_TTL, show_spinner=False)
def trending_pages(wikis: tuple[str, ...]) -> pd.DataFrame:
    return queries.trending_pages(engine(), settings().alerts.trending, wikis=wikis)


@st.cache_data(ttl=_TTL, show_spinner=False)
def alerts(span: Span, wikis: tuple[str, ...]) -> pd.DataFrame:
    return queries.alerts(engine(), span=span, wikis=wikis)


@st.cache_data(ttl=_TTL, show_spinner=False, max_entries=200)  # user names are free text
def user_history(span: Span, user: str) -> pd.DataFrame:
    return queries.user_history(engine(), span=span, user=user)


@st.cache_data(ttl=_TTL, show_spinner=False)
def pipeline_health(span: Span) -> PipelineHealth:
    return queries.pipeline_health(engine(), span=span)


@st.cache_data(ttl=_TTL, show_spinner=False)
def worker_heartbeat() -> dict[str, Any] | None:
    """The worker's ``/health`` report (JSON), or ``None`` when it does not answer. Not the
    database: the worker's own web server, read over HTTP when it is reachable."""
    return fetch_health(health_url(settings().app), HEARTBEAT_TIMEOUT)
