"""The repository keeps its promises: layout, README's configuration table, lint."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


def locked_packages(lock: str) -> dict[str, list[tuple[Version, int]]]:
    """requirements.lock's entries: name -> [(version, number of hashes)], one per marker."""
    entries: dict[str, list[tuple[Version, int]]] = {}
    for block in re.split(r"\n(?=[^\s#])", lock):
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", block)
        if match:
            hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}\b", block))
            name = canonicalize_name(match.group(1))
            entries.setdefault(name, []).append((Version(match.group(2)), hashes))
    return entries


def test_lock_pins_every_dependency_with_hashes() -> None:
    """requirements.lock (what ./infra/wikipulse installs) agrees with pyproject.toml: an edit to
    one without re-locking fails here. To re-lock, see the README's Contributing section."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = (ROOT / "requirements.lock").read_text()
    relock = "pyproject.toml and requirements.lock disagree: re-lock (README: Contributing)"
    assert "--generate-hashes" in lock.split("\n", 3)[1], "the lock's header names its command"
    entries = locked_packages(lock)
    assert entries, "requirements.lock pins nothing"
    unhashed = [name for name, pins in entries.items() if any(n == 0 for _, n in pins)]
    assert not unhashed, f"pinned without a hash: {unhashed}"

    project = pyproject["project"]
    wanted = [
        *project["dependencies"],
        *(r for extra in project.get("optional-dependencies", {}).values() for r in extra),
        *(r for group in pyproject.get("dependency-groups", {}).values() for r in group),
        *pyproject["build-system"]["requires"],  # source builds are hash-checked too
    ]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement.name} is not in requirements.lock; {relock}"
        for version, _ in entries[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside {text!r}; {relock}"
            )
        # What the extras bring (aiokafka[lz4] -> cramjam), per the installed distribution.
        for extra in requirement.extras:
            for dependency in importlib.metadata.requires(requirement.name) or []:
                brought = Requirement(dependency)
                if brought.marker and brought.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(brought.name) in entries, (
                        f"{brought.name} ({requirement.name}[{extra}]) is not locked; {relock}"
                    )

    # What installs from it: pinned, hash-checked, and stamped (a new lock reinstalls).
    script = (ROOT / "infra" / "wikipulse").read_text()
    assert "requirements.lock" in script and "--require-hashes" in script
    assert re.search(r"wanted=.*pyproject\.toml.*\$lock", script)
