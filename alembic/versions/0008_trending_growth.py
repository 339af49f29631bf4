"""trending_pages(): a page must have grown (min_growth); a young deployment's past as it is

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Two corrections to 0006's ``trending_pages()``, found by the alerts' accuracy benchmark
(tests/benchmarks/bench_alerts.py):

- **``min_growth``** (3 by default): a page is listed only when (``edits`` + 1) / (``expected`` +
  1) is at least this. A page edited all day by many people scores about its number of editors,
  which can pass any bar on editors alone; it is busy, not trending.
- **The past the data covers.** ``expected`` scaled the past edits by horizon / ``baseline``
  even when ``page_activity`` held less than a ``baseline`` of history (a deployment's first
  day): every busy page looked new. It now divides by the part of the baseline that
  ``page_activity`` covers (from its first minute), and is 0 only when nothing is known.

Its other arguments, columns and order are 0006's.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SIGNATURE = "trending_pages(TIMESTAMPTZ, INTERVAL, INTERVAL, INTEGER, BOOLEAN, INTEGER)"
NEW_SIGNATURE = (
    "trending_pages(TIMESTAMPTZ, INTERVAL, INTERVAL, INTEGER, BOOLEAN, INTEGER, DOUBLE PRECISION)"
)

TRENDING_PAGES = r"""
CREATE FUNCTION trending_pages(
    at TIMESTAMPTZ,
    horizon INTERVAL DEFAULT '15 minutes',
    baseline INTERVAL DEFAULT '24 hours',
    min_editors INTEGER DEFAULT 3,
    with_bots BOOLEAN DEFAULT false,
    max_rows INTEGER DEFAULT 20,
    min_growth DOUBLE PRECISION DEFAULT 3
) RETURNS TABLE (
    wiki TEXT, namespace INTEGER, title TEXT, server_name TEXT, edits BIGINT, editors BIGINT,
    expected DOUBLE PRECISION, score DOUBLE PRECISION
)
LANGUAGE sql STABLE AS $$
    WITH known AS (
        -- How much of the baseline page_activity covers: all of it, or (a young deployment)
        -- the time since its first minute.
        SELECT GREATEST(0, LEAST(
            extract(epoch FROM baseline),
            extract(epoch FROM at - horizon - (SELECT min(window_start) FROM page_activity))
        ))::float8 AS seconds
    ), recent AS (
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
    CROSS JOIN known
    CROSS JOIN LATERAL (
        SELECT CASE WHEN known.seconds > 0
                    THEN (coalesce(b.edits, 0) * extract(epoch FROM horizon)
                          / known.seconds)::float8
                    ELSE 0::float8 END AS expected
    ) AS x
    WHERE r.edits > 0 AND (r.edits + 1) / (x.expected + 1) >= min_growth
    ORDER BY score DESC, r.edits DESC, r.wiki, r.namespace, r.title
    LIMIT max_rows
$$
"""


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {OLD_SIGNATURE}")
    op.execute(TRENDING_PAGES)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {NEW_SIGNATURE}")
    op.execute(_revision_0006().TRENDING_PAGES)  # 0006's, as it was


def _revision_0006() -> ModuleType:
    """The 0006 migration's module (its file name starts with a digit: no plain import)."""
    path = Path(__file__).with_name("0006_trending_pages.py")
    spec = importlib.util.spec_from_file_location("wikipulse_revision_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
