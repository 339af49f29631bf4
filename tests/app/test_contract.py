"""The typed event's JSON Schema: committed, and only ever changed compatibly within a version.

Compatibility is checked against the frozen copies of every published schema
(app/contract/schemas/published/, see app/contract/compat.py), not against git history: a shallow
clone has no history, and the check must fail, never pass, when a published version is missing.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.contract import CONTRACTS, V1, V2, Contract, json_schema
from app.contract.compat import PUBLISHED_DIR, breaking_changes, published_schemas

VERSIONS = list(CONTRACTS.values())


@pytest.mark.parametrize("contract", VERSIONS, ids=lambda c: f"v{c.version}")
def test_committed_schema_matches_the_model(contract: Contract) -> None:
    assert contract.schema_file.name == f"recentchange.v{contract.version}.json"
    assert contract.schema_file.read_text() == contract.render_json_schema(), (
        "the typed model changed: run `python -m app.contract` and commit app/contract/schemas/"
    )


@pytest.mark.parametrize("contract", VERSIONS, ids=lambda c: f"v{c.version}")
def test_model_is_compatible_with_every_published_schema_of_its_version(
    contract: Contract,
) -> None:
    current = contract.json_schema()
    published = published_schemas(contract.version)  # raises when none is frozen
    assert f"recentchange.v{contract.version}.json" in published
    for name, schema in published.items():
        assert schema["$id"] == f"wikipulse/recentchange/{contract.version}", name
        assert breaking_changes(schema, current) == [], (
            f"incompatible with the published {name}: an incompatible change to the typed "
            "event needs a new version (and topic)"
        )


def test_version_2_is_a_new_major_because_it_breaks_version_1() -> None:
    """Why version 2 has a topic of its own: a reader of version 1 would lose three fields."""
    assert breaking_changes(published_schemas(1)["recentchange.v1.json"], V2.json_schema()) == [
        # In the published schema's field order (alphabetical).
        "field 'bot' removed or renamed",
        "field 'schema_version' no longer accepts integer [1]",
        "field 'user' removed or renamed",
        "field 'user_kind' removed or renamed",
        "field 'editor' newly required",
    ]


def test_a_nested_field_is_checked_field_by_field() -> None:
    published = published_schemas(2)["recentchange.v2.json"]
    removed = copy.deepcopy(V2.json_schema())
    del removed["$defs"]["Editor"]["properties"]["kind"]
    assert breaking_changes(published, removed) == ["field 'editor.kind' removed or renamed"]
    narrowed = copy.deepcopy(V2.json_schema())
    narrowed["$defs"]["Editor"]["properties"]["name"] = {"type": "string"}
    assert breaking_changes(published, narrowed) == ["field 'editor.name' no longer accepts null"]
    widened = copy.deepcopy(V2.json_schema())
    widened["$defs"]["Editor"]["properties"]["team"] = {"type": "string"}
    assert breaking_changes(published, widened) == []


def test_every_major_version_is_frozen_under_its_name() -> None:
    names = sorted(path.name for path in PUBLISHED_DIR.glob("*.json"))
    majors = set()
    for name in names:
        match = re.fullmatch(r"recentchange\.v(\d+)(\.\d+)?\.json", name)
        assert match, f"{name}: not recentchange.v<major>[.<n>].json"
        schema = json.loads((PUBLISHED_DIR / name).read_text(encoding="utf-8"))
        assert schema["$id"] == f"wikipulse/recentchange/{match.group(1)}", name
        majors.add(int(match.group(1)))
    assert majors == set(CONTRACTS), names


def test_a_missing_frozen_schema_fails_the_check(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"recentchange\.v1\.json"):
        published_schemas(1, tmp_path)
    with pytest.raises(FileNotFoundError):
        published_schemas(max(CONTRACTS) + 1)


@pytest.fixture
def published() -> dict[str, Any]:
    return published_schemas(V1.version)["recentchange.v1.json"]


@pytest.fixture
def schema() -> dict[str, Any]:
    return json_schema()


def test_checker_flags_a_removed_field(published: dict[str, Any], schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    del changed["properties"]["user"]
    assert breaking_changes(published, changed) == ["field 'user' removed or renamed"]


def test_checker_flags_a_renamed_field(published: dict[str, Any], schema: dict[str, Any]) -> None:
    changed = copy.deepcopy(schema)
    changed["properties"]["user_name"] = changed["properties"].pop("user")
    assert breaking_changes(published, changed) == ["field 'user' removed or renamed"]


def test_checker_flags_a_narrowed_type(published: dict[str, Any], schema: dict[str, Any]) -> None:
    to_string = copy.deepcopy(schema)
    to_string["properties"]["rc_id"] = {"type": "string"}
    assert breaking_changes(published, to_string) == [
        "field 'rc_id' no longer accepts integer minimum=0",
        "field 'rc_id' no longer accepts null",
    ]
    not_null = copy.deepcopy(schema)
    not_null["properties"]["rc_id"] = {"minimum": 0, "type": "integer"}
    assert breaking_changes(published, not_null) == ["field 'rc_id' no longer accepts null"]
    dropped_value = copy.deepcopy(schema)
    dropped_value["$defs"]["ChangeType"]["enum"].remove("external")
    assert breaking_changes(published, dropped_value) == [
        "field 'type' no longer accepts string ['categorize', 'edit', 'external', 'log', 'new']"
    ]
    tighter = copy.deepcopy(schema)
    tighter["properties"]["event_id"]["minLength"] = 36
    tighter["properties"]["title"]["format"] = "uri"
    assert breaking_changes(published, tighter) == [
        "field 'event_id' no longer accepts string minLength=1",
        "field 'title' no longer accepts string",
    ]


def test_checker_flags_a_newly_required_field(
    published: dict[str, Any], schema: dict[str, Any]
) -> None:
    changed = copy.deepcopy(schema)
    changed["properties"]["page_id"] = {"type": "integer"}
    changed["required"] = [*changed["required"], "page_id", "rc_id"]
    assert breaking_changes(published, changed) == [
        "field 'page_id' newly required",
        "field 'rc_id' newly required",
    ]


def test_checker_allows_compatible_changes(
    published: dict[str, Any], schema: dict[str, Any]
) -> None:
    changed = copy.deepcopy(schema)
    changed["properties"]["page_id"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    changed["properties"]["bot"] = {"anyOf": [{"type": "boolean"}, {"type": "null"}]}
    changed["properties"]["namespace"] = {"type": "number"}  # integer -> number, no bound
    changed["properties"]["event_time"].pop("format")
    changed["$defs"]["UserKind"]["enum"].append("system")
    assert breaking_changes(published, changed) == []
