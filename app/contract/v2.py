"""Version 2 of the typed event: the editor as one nested field.

The incompatible change from version 1: ``user``, ``user_kind`` and ``bot`` become
``editor.name``, ``editor.kind`` and ``editor.bot``. A reader of version 1 would find its three
fields gone, so version 2 has a topic of its own; every other field is version 1's. A version-2
event is made from the version-1 event that :func:`app.normalize.normalize` returns
(:meth:`RecentChangeV2.from_v1`), so both versions of one raw event always agree.

The fields shared with version 1 are written out here rather than inherited: each class is its
version's published schema, and a compatible change to one version must not reach the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.contract.kinds import EDIT_TYPES, ChangeType, NonNegative, UserKind
from app.contract.v1 import RecentChange


class Editor(BaseModel):
    """Who made the change."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Editor")

    name: str | None = Field(description="User name; null when suppressed.")
    kind: UserKind
    bot: bool = Field(description="The event's bot flag.")


class RecentChangeV2(BaseModel):
    """One change on a Wikimedia wiki, version 2 of the typed event."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="RecentChange")

    schema_version: Literal[2] = Field(2, description="Major version of this contract.")
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
    editor: Editor
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

    @classmethod
    def from_v1(cls, event: RecentChange) -> RecentChangeV2:
        """The same change in version 2 (validated: the two models are checked to agree)."""
        fields = event.model_dump(exclude={"schema_version", "user", "user_kind", "bot"})
        editor = Editor(name=event.user, kind=event.user_kind, bot=event.bot)
        return cls(**fields, editor=editor)

    @property
    def is_edit(self) -> bool:
        """An edit, as the aggregates count them: type edit or new."""
        return self.type in EDIT_TYPES

    def kafka_key(self) -> bytes:
        """The key of version 1: one page's events keep their order in either topic."""
        return f"{self.wiki}:{self.namespace}:{self.title}".encode()
