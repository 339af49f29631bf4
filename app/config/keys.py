"""Configuration keys: their paths, types and environment variables, and the layered values
(each with the source it came from) that loading merges and the policy checks quote."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, SecretStr

from app.config.settings import Settings

# --------------------------------------------------------------------------------------------
# Keys and their environment variables
# --------------------------------------------------------------------------------------------


def _leaf_annotations(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
    leaves: dict[tuple[str, ...], Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.update(_leaf_annotations(annotation, (*prefix, name)))
        else:
            leaves[(*prefix, name)] = annotation
    return leaves


#: Every configuration key (as a path) and its type annotation.
KEYS: dict[tuple[str, ...], Any] = _leaf_annotations(Settings)


def env_var_name(path: tuple[str, ...]) -> str:
    return "_".join(path).upper()


#: The secrets: read from the environment or .env only, refused in a YAML file.
SECRET_KEYS: tuple[tuple[str, ...], ...] = tuple(
    path for path, annotation in KEYS.items() if annotation is SecretStr
)

#: Environment variable -> key path, e.g. "SPARK_WINDOWING_DURATION" -> ("spark", ...).
ENV_VARS: dict[str, tuple[str, ...]] = {env_var_name(path): path for path in KEYS}

#: Names the seed's README and .env used; the canonical name wins when both are set.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "POSTGRES_DB": ("postgres", "database"),
    "KAFKA_BROKER": ("kafka", "bootstrap_servers"),
}


def dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path)


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def parse_env_value(path: tuple[str, ...], raw: str) -> Any:
    """Environment values are strings; lists are JSON/YAML flow lists or comma-separated."""
    if _is_list(KEYS[path]):
        text = raw.strip()
        if text.startswith("["):
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError:
                return raw  # validation reports it with the key
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


class Layered:
    """A nested dict of values plus, for each leaf path, a description of its source."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[tuple[str, ...], str] = {}

    def merge_tree(
        self, tree: Mapping[str, Any], source: str, prefix: tuple[str, ...] = ()
    ) -> None:
        for key, value in tree.items():
            path = (*prefix, str(key))
            if isinstance(value, Mapping) and path not in KEYS:
                self.merge_tree(value, source, path)
            else:
                self.set(path, value, source)

    def set(self, path: tuple[str, ...], value: Any, source: str) -> None:
        node = self.values
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        self.sources[path] = source

    def source_of(self, path: tuple[str | int, ...]) -> str | None:
        for length in range(len(path), 0, -1):
            found = self.sources.get(tuple(str(p) for p in path[:length]))
            if found:
                return found
        return None


def describe(value: Any, path: tuple[str | int, ...]) -> str:
    if "password" in str(path[-1] if path else ""):
        return "'***'" if value else "''"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def lookup(tree: Any, path: tuple[str | int, ...]) -> Any:
    node = tree
    for part in path:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
        else:
            return None
    return node
