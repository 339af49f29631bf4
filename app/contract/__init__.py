"""The typed event: what the typed Kafka topics carry, the single contract for an event's shape.

Imported by the worker (to validate and write), the Spark job (its schema is derived from the
models) and the dashboard. Imports only pydantic and the standard library.

Versions (:mod:`app.contract.versions`): version 1 (:class:`RecentChange`, :mod:`.v1`, frozen)
and version 2 (:class:`RecentChangeV2`, :mod:`.v2`: the editor as one nested field), each with its
own topic and committed JSON Schema. A compatible change (a new optional field, a wider type)
keeps a version; an incompatible one (a field removed or renamed, a type narrowed) needs a new
version, and with it a new topic. The names below without a version (``SCHEMA_VERSION``,
``SCHEMA_NAME``, ``TYPED_HEADERS`` …) are version 1's, what the worker writes by default.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.contract.headers import (
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
    HEADER_REASON,
    HEADER_REASON_CODE,
    HEADER_REASON_FIELD,
    HEADER_RECEIVED_AT,
    HEADER_RESUME_ID,
    HEADER_RESUME_TIME,
    HEADER_SCHEMA,
    HEADER_SCHEMA_VERSION,
    HEADER_SSE_ID,
    HEADER_TRUNCATED_FROM,
)
from app.contract.kinds import EDIT_TYPES, ChangeType, NonNegative, Outcome, UserKind
from app.contract.v1 import RecentChange
from app.contract.v2 import Editor, RecentChangeV2
from app.contract.versions import CONTRACTS, V1, V2, Contract, contract

#: Version 1, the default one.
SCHEMA_VERSION = V1.version
SCHEMA_NAME = V1.name
SCHEMA_FILE = V1.schema_file
TYPED_HEADERS = V1.headers

#: PostgreSQL relations (created by Alembic migrations), read by the dashboard.
TABLE_USER_EDIT_COUNTS = "user_edit_counts"
TABLE_WIKI_ACTIVITY = "wiki_activity"
TABLE_PAGE_ACTIVITY = "page_activity"
TABLE_PIPELINE_BATCHES = "pipeline_batches"
TABLE_ALERTS = "alerts"
#: The counter columns of wiki_activity, in order (the Spark job computes and writes them).
WIKI_ACTIVITY_COUNTERS = (
    "edits",
    "new_pages",
    "bot_edits",
    "anonymous_edits",
    "bytes_added",
    "bytes_removed",
    "events",
)


class Canary(BaseModel):
    """A canary event (meta.domain == "canary"): proof that the stream is alive, not a change."""

    model_config = ConfigDict(frozen=True)

    emitted_at: datetime | None


def json_schema() -> dict[str, object]:
    """The JSON Schema of version 1, as committed in ``SCHEMA_FILE``."""
    return V1.json_schema()


def render_json_schema() -> str:
    return V1.render_json_schema()


__all__ = [
    "CONTRACTS",
    "EDIT_TYPES",
    "HEADER_ORIGIN_OFFSET",
    "HEADER_ORIGIN_PARTITION",
    "HEADER_ORIGIN_TOPIC",
    "HEADER_REASON",
    "HEADER_REASON_CODE",
    "HEADER_REASON_FIELD",
    "HEADER_RECEIVED_AT",
    "HEADER_RESUME_ID",
    "HEADER_RESUME_TIME",
    "HEADER_SCHEMA",
    "HEADER_SCHEMA_VERSION",
    "HEADER_SSE_ID",
    "HEADER_TRUNCATED_FROM",
    "SCHEMA_FILE",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "TABLE_ALERTS",
    "TABLE_PAGE_ACTIVITY",
    "TABLE_PIPELINE_BATCHES",
    "TABLE_USER_EDIT_COUNTS",
    "TABLE_WIKI_ACTIVITY",
    "TYPED_HEADERS",
    "V1",
    "V2",
    "WIKI_ACTIVITY_COUNTERS",
    "Canary",
    "ChangeType",
    "Contract",
    "Editor",
    "NonNegative",
    "Outcome",
    "RecentChange",
    "RecentChangeV2",
    "UserKind",
    "contract",
    "json_schema",
    "render_json_schema",
]
