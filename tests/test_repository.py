"""The repository keeps its promises: layout, README's configuration table, lint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from app.config import ENV_VARS, key_table

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_layout() -> None:
    allowed = {"app", "spark", "alembic", "dashboards", "infra", "tests"}
    folders = {
        path.name
        for path in ROOT.iterdir()
        if path.is_dir() and not path.name.startswith(".") and not path.name.endswith(".egg-info")
    }
    assert folders <= allowed | {"build"}
    for required in ("pyproject.toml", "README.md", "alembic.ini", ".env.example", ".ci/run"):
        assert (ROOT / required).exists(), required


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = {
        match.group(1): (match.group(2), match.group(3))
        for match in re.finditer(
            r"^\| `([a-z_.]+)` \| `([A-Z_]+)`[^|]*\| (`[^`]*`) \|", readme, re.M
        )
    }
    for key, variable, default in key_table():
        assert key in rows, f"README's configuration table lacks {key}"
        assert rows[key][0] == variable
        shown = rows[key][1].strip("`")
        expected = (
            '""'
            if default == ""
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        assert shown == expected.replace("'", ""), (
            f"README's default of {key}: {shown} != {expected}"
        )
    assert len(rows) == len(ENV_VARS)


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "./infra/wikipulse test" in script
    assert "./infra/wikipulse test" in (ROOT / "README.md").read_text()


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
