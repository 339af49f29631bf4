"""The enumerations every version of the typed event shares. Imports only the standard library
and pydantic."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field


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
