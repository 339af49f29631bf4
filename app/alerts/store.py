"""The deliveries' side of PostgreSQL: claim what is due, record how it went, and what `status`
and ``/metrics`` say. Plain psycopg2 on short transactions (the dispatcher calls it from a
thread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg2
import psycopg2.extensions

from app.alerts.payload import Notification

Cursor = psycopg2.extensions.cursor

#: Claimed deliveries, and their notification as ``alerts`` holds it now.
CLAIM = """
    WITH due AS (
        SELECT notification_id, url FROM alert_deliveries
        WHERE delivered_at IS NULL AND next_attempt_at <= now() AND url = ANY(%(urls)s)
        ORDER BY next_attempt_at, notification_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE alert_deliveries AS d SET next_attempt_at = now() + %(lease)s
        FROM due WHERE d.notification_id = due.notification_id AND d.url = due.url
        RETURNING d.notification_id, d.url, d.attempts
    )
    SELECT c.url, c.attempts, n.id, n.event, a.kind, a.wiki, a.namespace, a.title,
           a.server_name, a.window_start, a.window_end, a.detected_window_end, a.observed,
           a.expected, a.score, a.opened_at, a.closed_at
    FROM claimed AS c
    JOIN alert_notifications AS n ON n.id = c.notification_id
    JOIN alerts AS a ON a.id = n.alert_id
    ORDER BY n.id, c.url
"""

RECORD = """
    UPDATE alert_deliveries
    SET attempts = attempts + 1, last_status = %(status)s, last_error = %(error)s,
        delivered_at = CASE WHEN %(delivered)s THEN now() END,
        next_attempt_at = now() + %(retry_in)s
    WHERE notification_id = %(notification_id)s AND url = %(url)s AND delivered_at IS NULL
"""


@dataclass(frozen=True)
class Delivery:
    url: str
    attempts: int  # before this one
    notification: Notification


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``status`` the HTTP status (None without an answer)."""

    delivered: bool
    status: int | None
    error: str | None


def claim(cursor: Cursor, urls: Sequence[str], *, limit: int, lease: timedelta) -> list[Delivery]:
    """Deliveries due to the configured ``urls``, held for ``lease`` (no other dispatcher takes
    them meanwhile, and a crashed one's come back after it)."""
    cursor.execute(CLAIM, {"urls": list(urls), "limit": limit, "lease": lease})
    return [
        Delivery(url, attempts, Notification(*row)) for url, attempts, *row in cursor.fetchall()
    ]


def record(cursor: Cursor, delivery: Delivery, outcome: Outcome, retry_in: timedelta) -> None:
    cursor.execute(
        RECORD,
        {
            "status": outcome.status,
            "error": outcome.error,
            "delivered": outcome.delivered,
            "retry_in": retry_in,
            "notification_id": delivery.notification.id,
            "url": delivery.url,
        },
    )


def new_notifications(cursor: Cursor, after: int | None) -> tuple[int, list[tuple[str, str]]]:
    """(the newest notification id, the (kind, event) of those after ``after``); with ``after``
    None, only the newest id (a new worker counts from now on)."""
    if after is None:
        cursor.execute("SELECT coalesce(max(id), 0) FROM alert_notifications")
        row = cursor.fetchone()
        return (int(row[0]) if row else 0), []
    cursor.execute(
        "SELECT n.id, a.kind, n.event FROM alert_notifications AS n "
        "JOIN alerts AS a ON a.id = n.alert_id WHERE n.id > %s ORDER BY n.id",
        (after,),
    )
    rows = cursor.fetchall()
    newest = rows[-1][0] if rows else after
    return newest, [(kind, event) for _, kind, event in rows]


@dataclass(frozen=True)
class DeliverySummary:
    open_alerts: dict[str, int]
    delivered: int
    pending: int
    failing: int  # pending after at least one failed attempt
    newest_error: tuple[str, str, datetime] | None  # url, error, when it was last tried

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.open_alerts.items()))
        alerts = f"alerts: {sum(self.open_alerts.values())} open" + (f" ({kinds})" if kinds else "")
        webhooks = (
            f"webhooks: {self.delivered} delivered, {self.pending} pending, {self.failing} failing"
        )
        if self.newest_error is not None:
            url, error, _ = self.newest_error
            webhooks += f" (last error, {url}: {error})"
        return [alerts, webhooks]


def delivery_summary(cursor: Cursor) -> DeliverySummary:
    cursor.execute("SELECT kind, count(*) FROM alerts WHERE closed_at IS NULL GROUP BY kind")
    open_alerts = {kind: int(count) for kind, count in cursor.fetchall()}
    cursor.execute(
        "SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL), "
        "count(*) FILTER (WHERE delivered_at IS NULL), "
        "count(*) FILTER (WHERE delivered_at IS NULL AND attempts > 0) FROM alert_deliveries"
    )
    row = cursor.fetchone()
    delivered, pending, failing = (int(value) for value in row) if row else (0, 0, 0)
    cursor.execute(
        "SELECT url, last_error, next_attempt_at FROM alert_deliveries "
        "WHERE delivered_at IS NULL AND last_error IS NOT NULL "
        "ORDER BY next_attempt_at DESC LIMIT 1"
    )
    error = cursor.fetchone()
    return DeliverySummary(
        open_alerts, delivered, pending, failing, None if error is None else tuple(error)
    )
