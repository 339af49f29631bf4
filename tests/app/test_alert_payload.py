"""app/alerts/payload.py: the idempotency key, the drop's and the page's summaries, the retry
delays. Expected values written by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.alerts.payload import Notification, idempotency_key, retry_delay, summary
from app.config import load_settings

AT = datetime(2026, 4, 6, 9, 45, tzinfo=UTC)


def test_the_idempotency_key_is_the_episodes_key_in_event_time() -> None:
    key = idempotency_key("wiki_surge", "nlwiki", None, None, AT, "opened")
    assert key == idempotency_key("wiki_surge", "nlwiki", None, None, AT, "opened")
    assert uuid.UUID(key).version == 5
    others = {
        idempotency_key("wiki_surge", "nlwiki", None, None, AT, "closed"),
        idempotency_key("wiki_surge", "nlwiki", None, None, AT + timedelta(minutes=1), "opened"),
        idempotency_key("wiki_drop", "nlwiki", None, None, AT, "opened"),
        idempotency_key("wiki_surge", "fywiki", None, None, AT, "opened"),
        idempotency_key("page_trending", "nlwiki", 0, "", AT, "opened"),
        idempotency_key("page_trending", "nlwiki", 1, "", AT, "opened"),
    }
    assert len(others) == 6 and key not in others


def test_a_drops_summary() -> None:
    drop = Notification(
        id=1, event="opened", kind="wiki_drop", wiki="dewiki", namespace=None, title=None,
        server_name=None, window_start=AT, window_end=AT + timedelta(minutes=2),
        detected_window_end=AT + timedelta(minutes=2), observed=0, expected=41, score=6.4,
        opened_at=AT, closed_at=None,
    )  # fmt: skip
    assert summary(drop) == (
        "dewiki has gone quiet since 2026-04-06 09:45 UTC: 0 edits a minute, 41 usual (score 6.4)"
    )
    assert drop.url is None


def test_retries_double_from_the_initial_delay_up_to_the_maximum() -> None:
    backoff = load_settings(
        environ={"ALERTS_WEBHOOKS_BACKOFF_INITIAL": "2 seconds",
                 "ALERTS_WEBHOOKS_BACKOFF_MAX": "10 seconds"}
    ).alerts.webhooks.backoff  # fmt: skip
    assert [retry_delay(n, backoff).total_seconds() for n in range(1, 6)] == [2, 4, 8, 10, 10]
