"""The services a benchmark runs against: Kafka and PostgreSQL (migrated), with the Spark connector
jars; the running ones of the environment's configuration (``--reuse-services``), or a stack of
the benchmark's own on a temporary home, removed afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from app.config import load_settings
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
