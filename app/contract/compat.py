"""Whether a JSON Schema of the typed event keeps every promise a published one made. Stdlib only.

Within a major version a schema may only widen: new optional fields, more JSON types or enum
values, a format or bound dropped or loosened. A field removed (or renamed), a field newly
required, or a type narrowed breaks consumers, and needs the next major version (and topic).

Each published schema is frozen in ``app/contract/schemas/published/`` and never edited
afterwards: ``recentchange.v1.json`` is version 1 as first published; a later compatible release
of it is frozen beside it as ``recentchange.v1.<n>.json``.
``app/contract/schemas/recentchange.v<N>.json`` is the current model's rendering
(``python -m app.contract``), not a frozen copy: it changes with the model, so checking the model
against it alone would compare the model with itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PUBLISHED_DIR = Path(__file__).resolve().parent / "schemas" / "published"

_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "pattern")
#: One JSON type a field accepts: (type, enum values or format, bounds).
Member = tuple[str, Any, tuple[tuple[str, Any], ...]]


def _members(schema: dict[str, Any], node: dict[str, Any]) -> set[Member]:
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in node:
        return set().union(*(_members(schema, member) for member in node["anyOf"]))
    bounds = tuple(sorted((key, node[key]) for key in (*_LOWER, *_UPPER) if key in node))
    if "const" in node or "enum" in node:
        values = frozenset(node["enum"] if "enum" in node else [node["const"]])
        refinement: Any = values
    else:
        refinement = node.get("format")
    kinds = node.get("type", "any")
    return {(kind, refinement, bounds) for kind in (kinds if isinstance(kinds, list) else [kinds])}


def _widens(old: Member, new: Member) -> bool:
    """Whether ``new`` accepts every value ``old`` does."""
    (kind, refinement, bounds), (new_kind, new_refinement, new_bounds) = old, new
    if new_kind not in (kind, "any") and (kind, new_kind) != ("integer", "number"):
        return False
    if isinstance(new_refinement, frozenset):
        if not (isinstance(refinement, frozenset) and refinement <= new_refinement):
            return False
    elif new_refinement not in (None, refinement):
        return False
    limits = dict(bounds)
    for key, limit in new_bounds:
        if key not in limits or (key == "pattern" and limit != limits[key]):
            return False
        if (key in _LOWER and limit > limits[key]) or (key in _UPPER and limit < limits[key]):
            return False
    return True


def _describe(member: Member) -> str:
    kind, refinement, bounds = member
    extra = sorted(refinement) if isinstance(refinement, frozenset) else refinement
    details = [str(extra)] if extra else []
    return " ".join([kind, *details, *(f"{key}={value}" for key, value in bounds)])


def _resolved(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node


def breaking_changes(published: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What a consumer of ``published`` would trip over in ``current``, one line per problem,
    each naming its field (``editor.name`` inside a nested object); empty when ``current`` is
    backward compatible."""
    return _object_changes(published, published, current, current, "")


def _object_changes(
    published_root: dict[str, Any],
    published: dict[str, Any],
    current_root: dict[str, Any],
    current: dict[str, Any],
    prefix: str,
) -> list[str]:
    problems = []
    fields = current["properties"]
    for name, node in published["properties"].items():
        field = f"{prefix}{name}"
        if name not in fields:
            problems.append(f"field {field!r} removed or renamed")
            continue
        old, new = _resolved(published_root, node), _resolved(current_root, fields[name])
        if "properties" in old and "properties" in new:  # a nested object: field by field
            problems += _object_changes(published_root, old, current_root, new, f"{field}.")
            continue
        accepted = _members(current_root, fields[name])
        for member in sorted(_members(published_root, node), key=repr):
            if not any(_widens(member, new_member) for new_member in accepted):
                problems.append(f"field {field!r} no longer accepts {_describe(member)}")
    newly = set(current.get("required", ())) - set(published.get("required", ()))
    problems += [f"field {prefix + name!r} newly required" for name in sorted(newly)]
    return problems


def published_schemas(major: int, directory: Path = PUBLISHED_DIR) -> dict[str, dict[str, Any]]:
    """Every frozen schema of ``major`` (file name -> schema); raises when there is none."""
    found = {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob(f"recentchange.v{major}.json"))
        + sorted(directory.glob(f"recentchange.v{major}.*.json"))
    }
    if f"recentchange.v{major}.json" not in found:
        raise FileNotFoundError(f"no published schema recentchange.v{major}.json in {directory}")
    return found
