"""What a webhook receives: the pure part (no I/O), one notification in, one body out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.config.settings import BackoffSettings
from app.contract.pages import page_url

#: uuid5's namespace for the idempotency keys (any fixed UUID: it only has to never change).
IDEMPOTENCY_NAMESPACE = uuid.UUID("0f6d3c1e-5b7a-4c52-9a0e-7d1f2f8f1a16")
WIKI_SURGE = "wiki_surge"
WIKI_DROP = "wiki_drop"
PAGE_TRENDING = "page_trending"
#: Every kind of alert (migration 0007's CHECK lists the same).
KINDS = (WIKI_SURGE, WIKI_DROP, PAGE_TRENDING)
OPENED, CLOSED = "opened", "closed"

_VERBS = {WIKI_SURGE: "is surging", WIKI_DROP: "has gone quiet", PAGE_TRENDING: "is trending"}


def idempotency_key(
    kind: str, wiki: str, namespace: int | None, title: str | None, window_start: datetime,
    event: str,
) -> str:  # fmt: skip
    """The same for every delivery of one notification of one episode, wherever and however
    often it is evaluated: the episode's key in event time, and ``opened`` or ``closed``."""
    name = "\x1f".join(
        (kind, wiki, "" if namespace is None else str(namespace), title or "",
         window_start.isoformat(), event)
    )  # fmt: skip
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, name))


@dataclass(frozen=True)
class Notification:
    """An alert opened or closed, as ``alerts`` holds it when it is delivered."""

    id: int
    event: str  # opened | closed
    kind: str
    wiki: str
    namespace: int | None
    title: str | None
    server_name: str | None
    window_start: datetime
    window_end: datetime
    detected_window_end: datetime
    observed: float
    expected: float
    score: float
    opened_at: datetime
    closed_at: datetime | None

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.kind, self.wiki, self.namespace, self.title,
                               self.window_start, self.event)  # fmt: skip

    @property
    def url(self) -> str | None:
        """The trending page on its wiki (wiki alerts have none)."""
        if self.server_name is None or self.title is None:
            return None
        return page_url(self.server_name, self.title)

    def subject(self) -> str:
        what = self.title if self.kind == PAGE_TRENDING else self.wiki
        where = f" on {self.wiki}" if self.kind == PAGE_TRENDING else ""
        return f"{what}{where} {_VERBS[self.kind]}"


def json_body(notification: Notification) -> dict[str, Any]:
    n = notification
    return {
        "idempotency_key": n.idempotency_key,
        "event": n.event,
        "kind": n.kind,
        "wiki": n.wiki,
        "namespace": n.namespace,
        "title": n.title,
        "url": n.url,
        "window_start": n.window_start.isoformat(),
        "window_end": n.window_end.isoformat(),
        "detected_window_end": n.detected_window_end.isoformat(),
        "observed": n.observed,
        "expected": n.expected,
        "score": n.score,
        "opened_at": n.opened_at.isoformat(),
        "closed_at": None if n.closed_at is None else n.closed_at.isoformat(),
        "summary": summary(n),
    }


def summary(notification: Notification) -> str:
    """One line for people: what, since when (event time), how far from the usual."""
    n = notification
    since = n.window_start.strftime("%Y-%m-%d %H:%M UTC")
    if n.event == CLOSED:
        until = n.window_end.strftime("%H:%M UTC")
        return f"Over: {n.subject()} (from {since} to {until})"
    if n.kind == PAGE_TRENDING:
        measure = f"{n.observed:g} edits in its horizon, {n.expected:.2f} expected"
    else:
        measure = f"{n.observed:g} edits a minute, {n.expected:g} usual"
    link = f" {n.url}" if n.url else ""
    return f"{n.subject()} since {since}: {measure} (score {n.score:.1f}){link}"


def slack_body(notification: Notification) -> dict[str, Any]:
    """Slack's incoming-webhook form: the summary as ``text``."""
    return {"text": summary(notification)}


def retry_delay(attempts: int, backoff: BackoffSettings) -> timedelta:
    """After ``attempts`` failed attempts: the initial delay, doubled each time, at most max."""
    delay: timedelta = backoff.initial * 2 ** max(attempts - 1, 0)
    return min(delay, backoff.max)
