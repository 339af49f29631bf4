"""Bad configuration: every key refuses an invalid value with a message naming it, and every
component refuses to start on one (exit 2, the key named, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.config import ConfigError, key_table, load_settings

ROOT = Path(__file__).resolve().parents[2]

#: Values a user could mistype; every key rejects at least one of them.
MISTAKES = ["not-a-number", "maybe", "-5", "0", "", "5 mintues", "[1,", "{", "ftp://x",
            "no spaces allowed here!", "99999999", "x" * 300]  # fmt: skip
#: Keys where any text is valid: paths and the password.
FREE_FORM = {"wikipulse.home", "spark.checkpoint.location", "postgres.password"}


def rejection(key: str, variable: str) -> tuple[str, str] | None:
    """The first mistake the key rejects, and the message line naming it."""
    for value in MISTAKES:
        try:
            load_settings(environ={variable: value, "WIKIPULSE_ENV_FILE": "/nonexistent"})
        except ConfigError as error:
            # A list names the offending element: key.0 = ...
            named = [p for p in error.problems if p.split(" = ")[0].rstrip("0123456789.") == key]
            assert named, f"{variable}={value!r} rejected without naming {key}: {error}"
            return value, named[0]
    return None


@pytest.mark.parametrize(("key", "variable"), [(k, v) for k, v, _ in key_table()])
def test_every_key_rejects_a_mistake_naming_itself(key: str, variable: str) -> None:
    found = rejection(key, variable)
    if key in FREE_FORM:
        assert found is None, f"{key} is documented as free-form but rejects {found}"
    else:
        assert found is not None, f"{key} accepts every one of {MISTAKES}"
        _, line = found
        assert variable in line


ENTRY_POINTS = {
    "worker": [sys.executable, "-m", "faust", "-A", "app.worker", "worker"],
    "spark job": [sys.executable, "-m", "spark.job", "--available-now"],
    "spark retention": [sys.executable, "-m", "spark.retention"],
    "alembic": [sys.executable, "-m", "alembic", "upgrade", "head"],
    "wikipulse up": [sys.executable, "-m", "infra.cli", "up"],
}
#: One mistake per part of the configuration.
BAD = {
    "KAFKA_TOPICS_TYPED_PARTITIONS": ("kafka.topics.typed.partitions", "zero"),
    "POSTGRES_PORT": ("postgres.port", "5432x"),
    "INGESTION_DEDUP_WINDOW": ("ingestion.dedup.window", "1 huor"),
}


@pytest.mark.parametrize("component", list(ENTRY_POINTS))
def test_each_component_refuses_to_start(component: str, subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, **{variable: value for variable, (_, value) in BAD.items()}}
    result = subprocess.run(
        ENTRY_POINTS[component], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    for variable, (key, value) in BAD.items():
        assert f"{key} = {value!r} (from environment variable {variable})" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_dashboard_names_the_bad_keys_on_its_page(
    subprocess_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in subprocess_env.items():
        monkeypatch.setenv(variable, value)
    for variable, (_, value) in BAD.items():
        monkeypatch.setenv(variable, value)
    page = AppTest.from_file(
        str(ROOT / "dashboards" / "wikipulse_dashboard.py"), default_timeout=60
    ).run()
    assert not page.exception
    message = page.error[0].value
    assert "configuration is invalid" in message
    for variable, (key, _) in BAD.items():
        assert key in message and variable in message
