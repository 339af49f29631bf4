"""Every version of the typed event, each with its name, headers and committed JSON Schema.

A version is a major version: within it only compatible changes are made (checked against its
frozen published schema by :mod:`app.contract.compat`); an incompatible change is a new version
with a topic of its own, written beside the old one until every reader has moved (see
app/README.md, "Evolving the contract").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.contract.headers import HEADER_SCHEMA, HEADER_SCHEMA_VERSION
from app.contract.v1 import RecentChange
from app.contract.v2 import RecentChangeV2

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


@dataclass(frozen=True)
class Contract:
    version: int
    model: type[BaseModel]

    @property
    def name(self) -> str:
        """The schema's name: the ``schema`` header of its records and its JSON Schema's $id."""
        return f"wikipulse/recentchange/{self.version}"

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]:
        """What says a typed record follows this version: readers aggregate only what they
        know."""
        return (
            (HEADER_SCHEMA, self.name.encode()),
            (HEADER_SCHEMA_VERSION, str(self.version).encode()),
        )

    @property
    def schema_file(self) -> Path:
        """The model's JSON Schema as committed (``python -m app.contract`` writes it)."""
        return SCHEMAS_DIR / f"recentchange.v{self.version}.json"

    def event(self, normalized: RecentChange) -> RecentChange | RecentChangeV2:
        """This version of an event ``normalize()`` made (as version 1)."""
        return normalized if self.version == 1 else RecentChangeV2.from_v1(normalized)

    def json_schema(self) -> dict[str, Any]:
        schema = self.model.model_json_schema(mode="serialization")
        schema["$id"] = self.name
        return schema

    def render_json_schema(self) -> str:
        return json.dumps(self.json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


V1 = Contract(1, RecentChange)
V2 = Contract(2, RecentChangeV2)
#: Every version, by number.
CONTRACTS = {contract.version: contract for contract in (V1, V2)}


def contract(version: int) -> Contract:
    """The contract of ``version``; a ValueError naming the known ones otherwise."""
    try:
        return CONTRACTS[version]
    except KeyError:
        known = ", ".join(str(v) for v in CONTRACTS)
        raise ValueError(f"no typed-event contract version {version} (known: {known})") from None
