"""Version 1 of the typed event: frozen. Only compatible changes (a new optional field, a wider
type) may ever be made to it; :mod:`app.contract.compat` checks them against the published copy."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.contract.kinds import EDIT_TYPES, ChangeType, NonNegative, UserKind


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
