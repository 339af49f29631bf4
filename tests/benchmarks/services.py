"""The services a benchmark runs against: Kafka and PostgreSQL (migrated), with the Spark connector
jars; the running ones of the environment's configuration (``--reuse-services``), or a stack of
the benchmark's own on a temporary home, removed afterwards; or PostgreSQL alone, with scratch
databases of a benchmark's own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import psycopg2

from app.config import Settings, load_settings
from app.config.clients import libpq_params
from infra.kafka import fetch_spark_jars
from infra.stack import Stack
from tests.conftest import make_home, stack_environment
from tests.harness import clean_environ, cluster_environment


@contextlib.contextmanager
def services(
    reuse: bool, prefix: str, *, cluster: bool = False
) -> Iterator[tuple[Stack, dict[str, str]]]:
    """(the stack, its environment); ``prefix`` names the temporary home of a stack of our own,
    in the cluster layout (three brokers; its runs get the Spark cluster and two workers) with
    ``cluster``."""
    if cluster and reuse:
        raise ValueError("the cluster layout runs services of its own")
    if reuse:
        environ = dict(os.environ)
        stack = Stack(load_settings(environ=environ))
        fetch_spark_jars(stack.home)
        yield stack, environ
        return
    layout = cluster_environment() if cluster else {}
    environ = {**clean_environ(), **stack_environment(make_home(prefix)), **layout}
    stack = Stack(load_settings(environ=environ))
    try:
        stack.up(pipeline=False)  # PostgreSQL migrated, Kafka, the Spark connector jars
        yield stack, environ
    finally:
        stack.down(purge=True)


@contextlib.contextmanager
def postgres(reuse: bool) -> Iterator[tuple[Stack, dict[str, str]]]:
    """A running PostgreSQL and the environment naming it: the configured one
    (``--reuse-services``), or one of our own in a temporary home, stopped and deleted after."""
    if reuse:
        environ = dict(os.environ)
        yield Stack(load_settings(environ=environ)), environ
        return
    environ = stack_environment(make_home("wikipulse-bench-"))
    stack = Stack(load_settings(environ=environ))
    try:
        stack.postgres.start()
        yield stack, environ
    finally:
        stack.down(purge=True)  # the home with it


def run(settings: Settings, statement: str, params: Any = None, *, autocommit: bool = False) -> Any:
    """One statement on a connection of its own: its rows, or the rows it changed."""
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    connection.autocommit = autocommit
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            result = cursor.fetchall() if cursor.description else cursor.rowcount
        if not autocommit:
            connection.commit()
        return result
    finally:
        connection.close()
