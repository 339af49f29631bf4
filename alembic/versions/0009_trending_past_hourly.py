"""trending_pages() reads a page's past from the hourly rollup; TRUNCATE page_activity empties it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

The same function as 0008's (arguments, columns, rows and order), computed with far fewer rows.
The Spark job's alert step calls it once per closed minute (spark/alerts.py) and the dashboard on
every refresh; tests/benchmarks/bench_now.py found where its time went: not in counting
distinct editors, but in each candidate page's **past**, a day of one-minute rows — 1,440 rows
for a page edited every minute, the very pages busy enough to be candidates.

- **The past from ``page_activity_hourly``.** The baseline's whole hours come from the hourly
  rollup (migration 0005: its triggers keep it equal to the sums of the minutes), and only the
  minutes at either end of the baseline, outside whole hours, from ``page_activity``: at most
  about 24 + 2 × 59 rows for a busy page instead of 1,440.
- **Fewer candidates before counting editors.** A page is counted only when the sum of each
  minute's editors in the horizon (bots left out unless ``with_bots``) reaches
  ``min_editors``: a person counted once per minute is counted at least once in the sum, so this
  cannot drop a page 0008 lists.
- **``TRUNCATE page_activity`` empties ``page_activity_hourly``** too, as 0003's triggers do for
  the other rollups: emptying the table before a rebuild (spark/README.md) would otherwise have
  left the hours to be counted twice. A DELETE (the retention) still leaves the hours.

``expected`` still divides by the part of the baseline ``page_activity`` covers (0008): the
baseline must stay within ``postgres.page_activity_retention``, as alembic/README.md says.
"""

from collections.abc import Sequence

from alembic import context, op

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
    ), editors AS (
        SELECT p.wiki, p.namespace, p.title, count(DISTINCT name) AS editors
        FROM recent AS r
        JOIN page_activity AS p USING (wiki, namespace, title)
        CROSS JOIN LATERAL unnest(p.editor_names) AS name
        WHERE p.window_start >= at - horizon AND p.window_start < at
          AND (with_bots OR NOT name = ANY (p.bot_names))
        GROUP BY 1, 2, 3
        HAVING count(DISTINCT name) >= min_editors
    ), span AS (
        -- The baseline [first, last): its whole hours [hours_from, hours_to), and the minutes
        -- before and after them.
        SELECT b.first, b.last, h.hours_from,
               GREATEST(h.hours_from, date_trunc('hour', b.last, 'UTC')) AS hours_to
        FROM (SELECT at - horizon - baseline AS first, at - horizon AS last) AS b
        CROSS JOIN LATERAL (
            SELECT date_trunc('hour', b.first, 'UTC')
                   + CASE WHEN date_trunc('hour', b.first, 'UTC') = b.first
                          THEN interval '0' ELSE interval '1 hour' END AS hours_from
        ) AS h
    ), past AS (
        SELECT e.wiki, e.namespace, e.title,
               coalesce((
                   SELECT sum(h.edits - CASE WHEN with_bots THEN 0 ELSE h.bot_edits END)
                   FROM page_activity_hourly AS h
                   WHERE h.wiki = e.wiki AND h.namespace = e.namespace AND h.title = e.title
                     AND h.hour >= s.hours_from AND h.hour < s.hours_to
               ), 0)
               + coalesce((
                   SELECT sum(p.edits - CASE WHEN with_bots THEN 0 ELSE p.bot_edits END)
                   FROM page_activity AS p
                   WHERE p.wiki = e.wiki AND p.namespace = e.namespace AND p.title = e.title
                     AND p.window_start >= s.first
                     AND p.window_start < LEAST(s.hours_from, s.last)
               ), 0)
               + coalesce((
                   SELECT sum(p.edits - CASE WHEN with_bots THEN 0 ELSE p.bot_edits END)
                   FROM page_activity AS p
                   WHERE p.wiki = e.wiki AND p.namespace = e.namespace AND p.title = e.title
                     AND p.window_start >= s.hours_to AND p.window_start < s.last
               ), 0) AS edits
        FROM editors AS e
        CROSS JOIN span AS s
    )
    SELECT r.wiki, r.namespace, r.title, r.server_name, r.edits::bigint, e.editors, x.expected,
           e.editors * (r.edits + 1)::float8 / (x.expected + 1) AS score
    FROM recent AS r
    JOIN editors AS e USING (wiki, namespace, title)
    JOIN past AS b USING (wiki, namespace, title)
    CROSS JOIN known
    CROSS JOIN LATERAL (
        SELECT CASE WHEN known.seconds > 0
                    THEN (b.edits * extract(epoch FROM horizon) / known.seconds)::float8
                    ELSE 0::float8 END AS expected
    ) AS x
    WHERE (r.edits + 1) / (x.expected + 1) >= min_growth
    ORDER BY score DESC, r.edits DESC, r.wiki, r.namespace, r.title
    LIMIT max_rows
$$
"""

PAGE_ACTIVITY_HOURLY_TRUNCATE = r"""
CREATE FUNCTION page_activity_hourly_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE page_activity_hourly;
    RETURN NULL;
END;
$$;
CREATE TRIGGER page_activity_hourly_truncate AFTER TRUNCATE ON page_activity
    FOR EACH STATEMENT EXECUTE FUNCTION page_activity_hourly_truncate();
"""


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(TRENDING_PAGES)
    op.execute(PAGE_ACTIVITY_HOURLY_TRUNCATE)


def downgrade() -> None:
    op.execute("DROP TRIGGER page_activity_hourly_truncate ON page_activity")
    op.execute("DROP FUNCTION page_activity_hourly_truncate()")
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    # 0008's, as it was: its module, from alembic's own script directory.
    op.execute(context.script.get_revision("0008").module.TRENDING_PAGES)
