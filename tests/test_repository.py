"""The repository keeps its promises: layout, the READMEs (their links, the paths they name,
the configuration table), the lock."""

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
#: The parts of the repository, each a top-level folder with a README of its own.
PARTS = ("app", "spark", "alembic", "dashboards", "infra", "tests")
READMES = (ROOT / "README.md", *(ROOT / part / "README.md" for part in PARTS))
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: A path into the repository, as the READMEs write one in backquotes (placeholders aside).
REPO_PATH = re.compile(r"(?<![\w./$-])(?:app|spark|alembic|dashboards|infra|tests)/[\w./-]*")
MODULE = re.compile(r"(?:python -m|faust -A) ((?:app|spark|dashboards|infra|tests)(?:\.\w+)*)")


def test_top_level_layout() -> None:
    allowed = set(PARTS)
    folders = {
        path.name
        for path in ROOT.iterdir()
        if path.is_dir() and not path.name.startswith(".") and not path.name.endswith(".egg-info")
    }
    assert folders <= allowed | {"build"}
    for required in ("pyproject.toml", "README.md", "alembic.ini", ".env.example", ".ci/run"):
        assert (ROOT / required).exists(), required


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "infra" / "README.md").read_text()
    rows = {
        match.group(1): (match.group(2), match.group(3))
        for match in re.finditer(
            r"^\| `([a-z0-9_.]+)` \| `([A-Z0-9_]+)`[^|]*\| (`[^`]*`) \|", readme, re.M
        )
    }
    for key, variable, default in key_table():
        assert key in rows, f"infra/README.md's configuration table lacks {key}"
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
            f"infra/README.md's default of {key}: {shown} != {expected}"
        )
    assert len(rows) == len(ENV_VARS)


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "./infra/wikipulse test" in script
    assert "./infra/wikipulse test" in (ROOT / "README.md").read_text()


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (code blocks aside)."""
    seen: dict[str, int] = {}
    for match in re.finditer(r"^#{1,6} (.+?)[ \t]*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, 0) + 1
        if seen[slug] > 1:
            seen[f"{slug}-{seen[slug] - 1}"] = 1
    return set(seen)


def test_the_readme_is_a_front_page_with_a_readme_per_part() -> None:
    """The root README tells the two commands' story and points at each part's README."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for command in ("up", "up --replay", "test"):
        assert f"./infra/wikipulse {command}" in readme, command
    for part in PARTS:
        assert (ROOT / part / "README.md").is_file(), part
        assert f"]({part}/README.md)" in readme, f"the README does not link {part}/README.md"


def test_every_relative_link_of_the_readmes_resolves() -> None:
    broken = []
    for readme in READMES:
        for target in LINK.findall(FENCE.sub("", readme.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            linked = (readme.parent / path).resolve() if path else readme
            where = f"{readme.relative_to(ROOT)}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and (linked.is_dir() or fragment not in anchors(linked.read_text())):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_path_and_module_the_readmes_name_exists() -> None:
    missing = []
    for readme in READMES:
        text = readme.read_text()
        for code in re.findall(r"`([^`\n]+)`", text):
            for path in REPO_PATH.findall(code):
                # A placeholder (<revision>.txt) stops the match at its folder; dotfiles are the
                # user's own (infra/compose/.env, git-ignored).
                if not Path(path).name.startswith(".") and not (ROOT / path).exists():
                    missing.append(f"{readme.relative_to(ROOT)}: {path}")
        for module in MODULE.findall(text):
            base = ROOT.joinpath(*module.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                missing.append(f"{readme.relative_to(ROOT)}: module {module}")
    assert not missing, "the READMEs name what is not there:\n" + "\n".join(missing)


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
