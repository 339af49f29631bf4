"""trending_pages(): counts distinct editors only for the pages that can still qualify

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

The same function as 0008's (arguments, columns, rows and order), computed in a cheaper order.
0008 unnested ``editor_names`` of every page edited in the horizon to count its distinct
editors, though nearly all of them had one editor and no chance; the Spark job's alert step
calls it once per closed minute (spark/alerts.py), so its cost slowed the batches behind it.

Now the pages are narrowed first, by two tests that cannot reject a page 0008 lists:

- **An upper bound of the distinct editors**: the sum, over the horizon's minutes, of each
  minute's editors (without the minute's bots unless ``with_bots``) must reach
  ``min_editors``: a person counted once per minute is counted at least once in the sum.
- **Growth**, which does not depend on the editors: (``edits`` + 1) / (``expected`` + 1) at
  least ``min_growth``.

and only the pages left have their editors counted exactly. tests/benchmarks/bench_dashboard.py
times both versions on the same data.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
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
        -- Each minute's editors, summed: at least the page's distinct editors.
        SELECT p.wiki, p.namespace, p.title, max(p.server_name) AS server_name,
               sum(p.edits - CASE WHEN with_bots THEN 0 ELSE p.bot_edits END) AS edits
        FROM page_activity AS p
        WHERE p.window_start >= at - horizon AND p.window_start < at
        GROUP BY 1, 2, 3
        HAVING sum(p.editors - CASE WHEN with_bots THEN 0 ELSE cardinality(p.bot_names) END)
                   >= min_editors
           AND sum(p.edits - CASE WHEN with_bots THEN 0 ELSE p.bot_edits END) > 0
    ), past AS (
        SELECT p.wiki, p.namespace, p.title,
               sum(p.edits - CASE WHEN with_bots THEN 0 ELSE p.bot_edits END) AS edits
        FROM recent AS r
        JOIN page_activity AS p USING (wiki, namespace, title)
        WHERE p.window_start >= at - horizon - baseline AND p.window_start < at - horizon
        GROUP BY 1, 2, 3
    ), grown AS (
        SELECT r.wiki, r.namespace, r.title, r.server_name, r.edits, x.expected
        FROM recent AS r
        LEFT JOIN past AS b USING (wiki, namespace, title)
        CROSS JOIN known
        CROSS JOIN LATERAL (
            SELECT CASE WHEN known.seconds > 0
                        THEN (coalesce(b.edits, 0) * extract(epoch FROM horizon)
                              / known.seconds)::float8
                        ELSE 0::float8 END AS expected
        ) AS x
        WHERE (r.edits + 1) / (x.expected + 1) >= min_growth
    ), editors AS (
        SELECT p.wiki, p.namespace, p.title, count(DISTINCT name) AS editors
        FROM grown AS g
        JOIN page_activity AS p USING (wiki, namespace, title)
        CROSS JOIN LATERAL unnest(p.editor_names) AS name
        WHERE p.window_start >= at - horizon AND p.window_start < at
          AND (with_bots OR NOT name = ANY (p.bot_names))
        GROUP BY 1, 2, 3
        HAVING count(DISTINCT name) >= min_editors
    )
    SELECT g.wiki, g.namespace, g.title, g.server_name, g.edits::bigint, e.editors, g.expected,
           e.editors * (g.edits + 1)::float8 / (g.expected + 1) AS score
    FROM grown AS g
    JOIN editors AS e USING (wiki, namespace, title)
    ORDER BY score DESC, g.edits DESC, g.wiki, g.namespace, g.title
    LIMIT max_rows
$$
"""


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(TRENDING_PAGES)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(_revision("0008_trending_growth.py").TRENDING_PAGES)  # 0008's, as it was


def _revision(file_name: str) -> ModuleType:
    """A migration's module (its file name starts with a digit: no plain import)."""
    path = Path(__file__).with_name(file_name)
    spec = importlib.util.spec_from_file_location(f"wikipulse_revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
