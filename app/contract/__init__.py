"""The typed event: what the typed Kafka topic carries, the single contract for an event's shape.

Imported by the worker (to validate and write), the Spark job (its schema is derived from
:class:`RecentChange`) and the dashboard. Imports only pydantic and the standard library.

Versioning: ``SCHEMA_VERSION`` is the major version of this contract. A compatible change (a new
optional field, a wider type) keeps the version; an incompatible one (a field removed or renamed,
a type narrowed) needs a new version, and with it a new topic (``...v2``). The JSON Schema of
each version is committed in ``app/contract/schemas/`` and guarded by tests
(:mod:`app.contract.compat`).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
SCHEMA_NAME = f"wikipulse/recentchange/{SCHEMA_VERSION}"
SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / f"recentchange.v{SCHEMA_VERSION}.json"

#: Kafka record headers written by the worker.
HEADER_SSE_ID = "sse-id"  # raw: the SSE event id (Wikimedia's resume position)
HEADER_RECEIVED_AT = "received-at"  # raw: when the worker received the event, epoch ms
HEADER_TRUNCATED_FROM = "truncated-from"  # raw: the event's size in bytes, when cut to fit
HEADER_SCHEMA = "schema"  # typed: SCHEMA_NAME
HEADER_SCHEMA_VERSION = "schema-version"  # typed: SCHEMA_VERSION as text
HEADER_ORIGIN_TOPIC = "origin-topic"  # typed, dead letter: the raw record's topic,
HEADER_ORIGIN_PARTITION = "origin-partition"  # partition
HEADER_ORIGIN_OFFSET = "origin-offset"  # and offset
HEADER_REASON = "reason"  # dead letter: why, in words
HEADER_REASON_CODE = "reason-code"  # dead letter: RejectCode
HEADER_REASON_FIELD = "reason-field"  # dead letter: the field at fault, or empty
#: What says a typed record follows this contract: readers aggregate only what they know.
TYPED_HEADERS = (
    (HEADER_SCHEMA, SCHEMA_NAME.encode()),
    (HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION).encode()),
)

#: PostgreSQL relations (created by Alembic migrations), read by the dashboard.
TABLE_USER_EDIT_COUNTS = "user_edit_counts"
TABLE_WIKI_ACTIVITY = "wiki_activity"
TABLE_PIPELINE_BATCHES = "pipeline_batches"
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


class ChangeType(StrEnum):
    EDIT = "edit"
    NEW = "new"
    LOG = "log"
    CATEGORIZE = "categorize"
    EXTERNAL = "external"


class UserKind(StrEnum):
    BOT = "bot"  # the event's bot flag is set
    ANONYMOUS = "anonymous"  # an IPv4 or IPv6 address
    TEMPORARY = "temporary"  # a temporary account, "~2026-10001-23"
    REGISTERED = "registered"
    HIDDEN = "hidden"  # no user name: suppressed (redacted) by the wiki


class Outcome(StrEnum):
    """What became of one raw record. Every raw record ends in exactly one."""

    VALID = "valid"  # written to the typed topic
    DEAD_LETTER = "dead_letter"  # written to the dead-letter topic with a reason
    FILTERED = "filtered"  # valid, but excluded by the configured filters
    DUPLICATE = "duplicate"  # its meta.id was seen already
    CANARY = "canary"  # Wikimedia's canary event: the stream's heartbeat


EDIT_TYPES = frozenset({ChangeType.EDIT, ChangeType.NEW})

NonNegative = Annotated[int, Field(ge=0)]


class RecentChange(BaseModel):
    """One change on a Wikimedia wiki, normalized from any version of its recentchange event."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="RecentChange")

    schema_version: Literal[1] = Field(1, description="Major version of this contract.")
    source_schema: str = Field(
        description="Schema of the source event: its $schema (/mediawiki/recentchange/1.0.0) "
        "or legacy meta.schema_uri (mediawiki/recentchange/1).",
    )
    event_id: str = Field(min_length=1, description="meta.id: unique per event.")
    event_time: AwareDatetime = Field(
        description="When the change happened (UTC): `timestamp`, else meta.dt."
    )
    emitted_at: AwareDatetime = Field(description="meta.dt: when the event was emitted (UTC).")
    wiki: str = Field(min_length=1, description="Database name of the wiki, e.g. enwiki.")
    server_name: str = Field(min_length=1, description="e.g. en.wikipedia.org.")
    type: ChangeType
    namespace: int = Field(ge=-2, description="MediaWiki namespace (-2 Media, -1 Special).")
    title: str
    rc_id: NonNegative | None = Field(None, description="The recentchange id, if any.")
    user: str | None = Field(None, description="User name; null when suppressed.")
    user_kind: UserKind
    bot: bool
    minor: bool | None = None
    patrolled: bool | None = Field(None, description="Null on wikis without patrolling.")
    length_old: NonNegative | None = None
    length_new: NonNegative | None = None
    length_delta: int | None = Field(
        None, description="length_new - length_old (a new page counts from 0)."
    )
    revision_old: NonNegative | None = None
    revision_new: NonNegative | None = None
    log_type: str | None = None
    log_action: str | None = None
    comment: str | None = None

    @property
    def is_edit(self) -> bool:
        """An edit, as the aggregates count them: type edit or new."""
        return self.type in EDIT_TYPES

    def kafka_key(self) -> bytes:
        """One page's events share a key, so they keep their order in the typed topic."""
        return f"{self.wiki}:{self.namespace}:{self.title}".encode()


class Canary(BaseModel):
    """A canary event (meta.domain == "canary"): proof that the stream is alive, not a change."""

    model_config = ConfigDict(frozen=True)

    emitted_at: datetime | None


def json_schema() -> dict[str, object]:
    """The JSON Schema of the typed event, as committed in ``SCHEMA_FILE``."""
    schema = RecentChange.model_json_schema(mode="serialization")
    schema["$id"] = SCHEMA_NAME
    return schema


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
