"""The Spark tests' fixtures (``spark``, ``job_settings``) live in tests/spark/fixtures.py, a
plugin registered by tests/conftest.py, because tests/recorded/ uses them too."""

from __future__ import annotations

from tests.spark.fixtures import JobSettings

__all__ = ["JobSettings"]
