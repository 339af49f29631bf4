"""trending_pages(): the pages edited now far more than in their own recent past

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

One home for the trending score, which the dashboard and the alerts both read. Over the
``horizon`` before ``at`` (event time: the caller passes the newest ``window_end`` it knows, so a
replay finds what the live run found), for each page:

- ``edits``: its edits (without bots' edits unless ``with_bots``);
- ``editors``: its distinct editors over the whole horizon (bots left out likewise), exact, from
  ``page_activity.editor_names``;
- ``expected``: the edits its own past predicts for a horizon: its edits over the ``baseline``
  before the horizon, times horizon / baseline;
- ``score`` = ``editors`` × (``edits`` + 1) / (``expected`` + 1).

A page edited all day at its usual pace scores about its number of editors; a page that went
from nothing to 20 edits by 8 people scores 8 × 21 / 1 = 168. Pages with fewer than
``min_editors`` distinct editors are left out (one editor's 30 quick saves are not news), and
so are bots by default. Highest score first, at most ``max_rows``.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRENDING_PAGES = r"""
CREATE FUNCTION trending_pages(
    at TIMESTAMPTZ,
    horizon INTERVAL DEFAULT '15 minutes',
    baseline INTERVAL DEFAULT '24 hours',
    min_editors INTEGER DEFAULT 3,
    with_bots BOOLEAN DEFAULT false,
    max_rows INTEGER DEFAULT 20
) RETURNS TABLE (
    wiki TEXT, namespace INTEGER, title TEXT, server_name TEXT, edits BIGINT, editors BIGINT,
    expected DOUBLE PRECISION, score DOUBLE PRECISION
)
LANGUAGE sql STABLE AS $$
    WITH recent AS (
        SELECT p.wiki, p.namespace, p.title, max(p.server_name) AS server_name,
               sum(p.edits - CASE WHEN with_bots THEN 0 ELSE p.bot_edits END) AS edits
        FROM page_activity AS p
        WHERE p.window_start >= at - horizon AND p.window_start < at
        GROUP BY 1, 2, 3
    ), editors AS (
        SELECT p.wiki, p.namespace, p.title, count(DISTINCT name) AS editors
        FROM page_activity AS p CROSS JOIN LATERAL unnest(p.editor_names) AS name
        WHERE p.window_start >= at - horizon AND p.window_start < at
          AND (with_bots OR NOT name = ANY (p.bot_names))
        GROUP BY 1, 2, 3
        HAVING count(DISTINCT name) >= min_editors
    ), past AS (
        SELECT p.wiki, p.namespace, p.title,
               sum(p.edits - CASE WHEN with_bots THEN 0 ELSE p.bot_edits END) AS edits
        FROM editors AS e
        JOIN page_activity AS p USING (wiki, namespace, title)
        WHERE p.window_start >= at - horizon - baseline AND p.window_start < at - horizon
        GROUP BY 1, 2, 3
    )
    SELECT r.wiki, r.namespace, r.title, r.server_name, r.edits::bigint, e.editors, x.expected,
           e.editors * (r.edits + 1)::float8 / (x.expected + 1) AS score
    FROM recent AS r
    JOIN editors AS e USING (wiki, namespace, title)
    LEFT JOIN past AS b USING (wiki, namespace, title)
    CROSS JOIN LATERAL (
        SELECT (coalesce(b.edits, 0) * extract(epoch FROM horizon)
                / extract(epoch FROM baseline))::float8 AS expected
    ) AS x
    WHERE r.edits > 0
    ORDER BY score DESC, r.edits DESC, r.wiki, r.namespace, r.title
    LIMIT max_rows
$$
"""


def upgrade() -> None:
    op.execute(TRENDING_PAGES)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION trending_pages(TIMESTAMPTZ, INTERVAL, INTERVAL, INTEGER, BOOLEAN, INTEGER)"
    )
