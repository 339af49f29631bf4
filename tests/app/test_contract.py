"""The typed event's JSON Schema: committed, and only ever changed compatibly within a version."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.contract import SCHEMA_FILE, SCHEMA_VERSION, json_schema, render_json_schema

ROOT = Path(__file__).resolve().parents[2]


def _types(schema: dict[str, Any], node: dict[str, Any]) -> set[tuple[str, Any]]:
    """The set of (type, refinement) a property accepts; refinement = enum values or format."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in node:
        return set().union(*(_types(schema, member) for member in node["anyOf"]))
    if "const" in node:
        return {(node.get("type", "any"), frozenset([node["const"]]))}
    if "enum" in node:
        return {(node.get("type", "any"), frozenset(node["enum"]))}
    return {(node.get("type", "any"), node.get("format"))}


def _accepts(new: set[tuple[str, Any]], old_member: tuple[str, Any]) -> bool:
    kind, refinement = old_member
    for new_kind, new_refinement in new:
        if new_kind != kind:
            continue
        if isinstance(refinement, frozenset) and isinstance(new_refinement, frozenset):
            if refinement <= new_refinement:
                return True
        elif new_refinement in (None, refinement):
            return True
    return False


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a consumer of ``old`` would trip over in ``new``: removed/renamed fields, narrowed
    types (and enum values dropped)."""
    problems = []
    for name, old_node in old["properties"].items():
        if name not in new["properties"]:
            problems.append(f"field {name!r} removed or renamed")
            continue
        new_types = _types(new, new["properties"][name])
        for member in sorted(_types(old, old_node), key=repr):
            if not _accepts(new_types, member):
                problems.append(f"field {name!r} no longer carries {member[0]} {member[1] or ''}")
    return problems


def published_versions() -> list[dict[str, Any]]:
    """Every committed version of this version's schema file (git history), plus the file."""
    relative = SCHEMA_FILE.relative_to(ROOT)
    versions = [json.loads(SCHEMA_FILE.read_text())]
    try:
        commits = subprocess.run(
            ["git", "log", "--format=%H", "--", str(relative)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return versions
    for commit in commits:
        shown = subprocess.run(
            ["git", "show", f"{commit}:{relative}"], cwd=ROOT, capture_output=True, text=True
        )
        if shown.returncode == 0:
            versions.append(json.loads(shown.stdout))
    return versions


def test_committed_schema_matches_the_model() -> None:
    assert SCHEMA_FILE.name == f"recentchange.v{SCHEMA_VERSION}.json"
    assert SCHEMA_FILE.read_text() == render_json_schema(), (
        "the typed model changed: run `python -m app.contract` and commit app/schemas/"
    )


def test_model_is_compatible_with_every_published_version() -> None:
    current = json_schema()
    for published in published_versions():
        assert breaking_changes(published, current) == [], (
            "an incompatible change to the typed event needs a new SCHEMA_VERSION (and topic)"
        )


@pytest.fixture
def schema() -> dict[str, Any]:
    return json_schema()


def test_checker_flags_a_removed_field(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    del changed["properties"]["user"]
    assert breaking_changes(schema, changed) == ["field 'user' removed or renamed"]


def test_checker_flags_a_renamed_field(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    changed["properties"]["user_name"] = changed["properties"].pop("user")
    assert breaking_changes(schema, changed) == ["field 'user' removed or renamed"]


def test_checker_flags_a_narrowed_type(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    changed["properties"]["rc_id"] = {"type": "string"}
    assert breaking_changes(schema, changed)
    dropped_value = copy.deepcopy(schema)
    dropped_value["$defs"]["ChangeType"]["enum"].remove("external")
    assert breaking_changes(schema, dropped_value)


def test_checker_allows_compatible_changes(schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    changed["properties"]["page_id"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    changed["properties"]["bot"] = {"anyOf": [{"type": "boolean"}, {"type": "null"}]}
    changed["$defs"]["UserKind"]["enum"].append("system")
    assert breaking_changes(schema, changed) == []
