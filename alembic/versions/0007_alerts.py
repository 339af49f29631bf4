"""alerts (one row per episode), their notifications and webhook deliveries, the detector's progress

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

``alerts``: one row per episode of a wiki surging (``wiki_surge``), a busy wiki falling silent
(``wiki_drop``) or a page trending (``page_trending``), written by the Spark job's alert step
(spark/alerts.py) and updated while the episode lasts. Its key is what the events say, never
when they were processed: (kind, wiki, namespace, title, ``window_start``, the episode's first
minute in event time). Evaluating the same minutes again (a restart, a replay) finds the same
key and opens nothing new.

- ``window_end``: the end of the episode's newest minute so far; ``detected_window_end``: the end
  of the minute whose evaluation opened it (the detection delay is this minus ``window_start``);
- ``observed``, ``expected``, ``score``: of its newest minute (surges and drops: edits in that
  minute, the wiki's median per minute before the episode, robust deviations from it; pages:
  trending_pages()'s edits, expected and score over its horizon); ``deviation``: the wiki's
  robust deviation per minute before the episode (null for pages);
- ``opened_at``, ``updated_at``, ``closed_at``: wall-clock times of the step that wrote them.

``alert_notifications``: what to tell the webhooks, one row per alert opened and per alert
closed (an outbox: the alert step writes it in the transaction that changes the alert, so a
notification is never lost nor made twice). ``alert_deliveries``: one row per notification and
webhook URL, with its attempts, for the worker that POSTs them (app/alerts).

``alert_progress``: the newest minute each detector has evaluated (null: none yet), and the
newest minute ``wiki_activity`` held at its previous step (which tells the step what the
watermark has closed since), written in the same transaction as the alerts it opened.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE = r"""
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('wiki_surge', 'wiki_drop', 'page_trending')),
    wiki TEXT NOT NULL,
    namespace INTEGER,
    title TEXT,
    server_name TEXT,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    detected_window_end TIMESTAMPTZ NOT NULL,
    observed DOUBLE PRECISION NOT NULL,
    expected DOUBLE PRECISION NOT NULL,
    deviation DOUBLE PRECISION,
    score DOUBLE PRECISION NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at TIMESTAMPTZ,
    CHECK ((kind = 'page_trending') = (title IS NOT NULL AND namespace IS NOT NULL)),
    CHECK (window_start < window_end AND window_start < detected_window_end)
);
-- One episode per key, whoever evaluates it and however often.
CREATE UNIQUE INDEX alerts_episode
    ON alerts (kind, wiki, coalesce(namespace, -1), coalesce(title, ''), window_start);
-- The open episodes (the alert step's state, the dashboard's list).
CREATE INDEX alerts_open ON alerts (kind, wiki) WHERE closed_at IS NULL;
-- The dashboard's history, newest first.
CREATE INDEX alerts_window_start ON alerts (window_start DESC);

CREATE TABLE alert_notifications (
    id BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    event TEXT NOT NULL CHECK (event IN ('opened', 'closed')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (alert_id, event)
);

CREATE TABLE alert_deliveries (
    notification_id BIGINT NOT NULL REFERENCES alert_notifications (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ,
    last_status INTEGER,
    last_error TEXT,
    PRIMARY KEY (notification_id, url)
);
CREATE INDEX alert_deliveries_pending
    ON alert_deliveries (next_attempt_at) WHERE delivered_at IS NULL;

CREATE TABLE alert_progress (
    detector TEXT PRIMARY KEY,
    evaluated_through TIMESTAMPTZ,
    newest_minute TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    op.execute(CREATE)


def downgrade() -> None:
    op.execute("DROP TABLE alert_progress, alert_deliveries, alert_notifications, alerts")
