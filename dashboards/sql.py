"""Every SQL statement of the dashboard, as text: :mod:`dashboards.queries` runs them.

Values are always bound parameters (``:name``), never formatted into the SQL text: a user name
with quotes, ``%``, ``_``, right-to-left or zero-width characters is just a value (the only
text put into SQL are the tables' names, constants).

Each statement reads rollups for the whole hours and days of a span and the base tables only
for the minutes at its edges: the ``m1``/``m2`` (minutes), ``h1``/``h2`` (hours) and ``d``
(days) parameters are :meth:`dashboards.view.Pieces.params` (see migration 0003).
"""

from __future__ import annotations

from app.contract import (
    TABLE_PAGE_ACTIVITY,
    TABLE_PIPELINE_BATCHES,
    TABLE_USER_EDIT_COUNTS,
    TABLE_WIKI_ACTIVITY,
)

#: The base tables (the contract's names; the rollups of migration 0003 are the dashboard's own).
USERS, WIKIS, BATCHES = TABLE_USER_EDIT_COUNTS, TABLE_WIKI_ACTIVITY, TABLE_PIPELINE_BATCHES
PAGES = TABLE_PAGE_ACTIVITY

#: With bots excluded, per-user panels hide accounts named like bots: user_edit_counts carries
#: no bot flag. A PostgreSQL regular expression, case-insensitive: "bot" ending a word.
BOT_NAME_PATTERN = r"bot\M"


# ---- bounds of the data, the wiki filter's options ---------------------------------------------

BOUNDS = f"""
SELECT least((SELECT min(window_start) FROM {WIKIS}),
             (SELECT min(window_start) FROM {USERS})) AS oldest,
       greatest((SELECT window_end FROM {WIKIS} ORDER BY window_start DESC LIMIT 1),
                (SELECT window_end FROM {USERS} ORDER BY window_start DESC LIMIT 1))
           AS newest_end
"""

WIKIS_BY_EDITS = """
SELECT wiki FROM wiki_activity_rollup WHERE grain = 'day'
GROUP BY wiki ORDER BY sum(edits) DESC, wiki
"""


# ---- sums of wiki_activity ---------------------------------------------------------------------

_IN_PIECES_MINUTES = """(
    (window_start >= :m1_start AND window_start < :m1_end)
    OR (window_start >= :m2_start AND window_start < :m2_end))"""
_IN_PIECES_ROLLUP = """(
    (grain = 'hour' AND ((bucket >= :h1_start AND bucket < :h1_end)
                      OR (bucket >= :h2_start AND bucket < :h2_end)))
    OR (grain = 'day' AND bucket >= :d_start AND bucket < :d_end))"""
_SUMS = """coalesce(sum(edits), 0), coalesce(sum(bot_edits), 0),
       coalesce(sum(anonymous_edits), 0), coalesce(sum(new_pages), 0),
       coalesce(sum(bytes_added), 0), coalesce(sum(bytes_removed), 0)"""
_COUNTERS = "edits, bot_edits, anonymous_edits, new_pages, bytes_added, bytes_removed"

ACTIVITY_ALL_WIKIS = f"""
SELECT {_SUMS}
FROM activity_totals
WHERE (grain = 'minute' AND ((bucket >= :m1_start AND bucket < :m1_end)
                          OR (bucket >= :m2_start AND bucket < :m2_end)))
   OR {_IN_PIECES_ROLLUP}
"""

ACTIVITY_SOME_WIKIS = f"""
SELECT {_SUMS}
FROM (
    SELECT {_COUNTERS} FROM {WIKIS}
    WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND {_IN_PIECES_MINUTES}
    UNION ALL
    SELECT {_COUNTERS} FROM wiki_activity_rollup
    WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND {_IN_PIECES_ROLLUP}
) AS picked
"""


# ---- active editors ----------------------------------------------------------------------------

#: count(*) over DISTINCT hashes the names; count(DISTINCT ...) would sort them (twice slower).
EDITORS_EXACT = f"""
SELECT count(*) FROM (
    SELECT DISTINCT user_name FROM {USERS}
    WHERE window_start >= :start AND window_start < :end
) AS editors
"""

EDITOR_SKETCHES = """
SELECT s.registers
FROM unnest(CAST(:grains AS TEXT[]), CAST(:buckets AS TIMESTAMPTZ[])) AS b (grain, bucket)
JOIN editor_sketches AS s ON s.grain = b.grain AND s.bucket = b.bucket
"""


# ---- timeline ----------------------------------------------------------------------------------

TIMELINE_ALL_WIKIS = """
SELECT bucket, edits, bot_edits, anonymous_edits
FROM activity_totals
WHERE grain = :grain AND bucket >= :start AND bucket < :end
ORDER BY bucket
"""

TIMELINE_MINUTES_SOME_WIKIS = f"""
SELECT window_start, sum(edits), sum(bot_edits), sum(anonymous_edits)
FROM {WIKIS}
WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND window_start >= :start AND window_start < :end
GROUP BY window_start
ORDER BY window_start
"""

TIMELINE_HOURS_SOME_WIKIS = """
SELECT bucket, sum(edits), sum(bot_edits), sum(anonymous_edits)
FROM wiki_activity_rollup
WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND grain = 'hour'
  AND bucket >= :start AND bucket < :end
GROUP BY bucket
ORDER BY bucket
"""


# ---- top contributors --------------------------------------------------------------------------

#: The seed's top_contributors_hourly, for any span (the same ORDER BY and LIMIT).
TOP_USERS_DIRECT = f"""
SELECT user_name, sum(edit_count) AS edits
FROM {USERS}
WHERE window_start >= :start AND window_start < :end
  AND (:bots OR user_name !~* :bot_pattern)
GROUP BY user_name
ORDER BY edits DESC, user_name
LIMIT :limit
"""

#: The threshold algorithm's lists: each covering bucket's best ``:depth`` users.
TOP_USERS_PER_BUCKET = """
SELECT b.position, r.user_name, r.edits
FROM unnest(CAST(:grains AS TEXT[]), CAST(:buckets AS TIMESTAMPTZ[]))
     WITH ORDINALITY AS b (grain, bucket, position)
CROSS JOIN LATERAL (
    SELECT user_name, edits FROM user_edit_rollup AS r
    WHERE r.grain = b.grain AND r.bucket = b.bucket
      AND (:bots OR r.user_name !~* :bot_pattern)
    ORDER BY r.edits DESC
    LIMIT :depth
) AS r
"""

#: The exact sums over a span's pieces of the users in ``:names``.
USER_SUMS = f"""
SELECT c.user_name,
    coalesce((SELECT sum(u.edit_count) FROM {USERS} AS u
              WHERE u.user_name = c.user_name
                AND u.window_start >= :m1_start AND u.window_start < :m1_end), 0)
  + coalesce((SELECT sum(u.edit_count) FROM {USERS} AS u
              WHERE u.user_name = c.user_name
                AND u.window_start >= :m2_start AND u.window_start < :m2_end), 0)
  + coalesce((SELECT sum(r.edits) FROM user_edit_rollup AS r
              WHERE r.user_name = c.user_name AND r.grain = 'hour'
                AND r.bucket >= :h1_start AND r.bucket < :h1_end), 0)
  + coalesce((SELECT sum(r.edits) FROM user_edit_rollup AS r
              WHERE r.user_name = c.user_name AND r.grain = 'hour'
                AND r.bucket >= :h2_start AND r.bucket < :h2_end), 0)
  + coalesce((SELECT sum(r.edits) FROM user_edit_rollup AS r
              WHERE r.user_name = c.user_name AND r.grain = 'day'
                AND r.bucket >= :d_start AND r.bucket < :d_end), 0) AS edits
FROM unnest(CAST(:names AS TEXT[])) AS c (user_name)
"""


# ---- top wikis ---------------------------------------------------------------------------------

_WIKI_COUNTERS = "wiki, edits, bot_edits, new_pages, bytes_added"

TOP_WIKIS = f"""
SELECT wiki, sum(edits) AS edits, sum(bot_edits) AS bot_edits, sum(new_pages) AS new_pages,
       sum(bytes_added) AS bytes_added
FROM (
    SELECT {_WIKI_COUNTERS} FROM {WIKIS}
    WHERE {_IN_PIECES_MINUTES}
      AND (cardinality(CAST(:wikis AS TEXT[])) = 0 OR wiki = ANY(CAST(:wikis AS TEXT[])))
    UNION ALL
    SELECT {_WIKI_COUNTERS} FROM wiki_activity_rollup
    WHERE {_IN_PIECES_ROLLUP}
      AND (cardinality(CAST(:wikis AS TEXT[])) = 0 OR wiki = ANY(CAST(:wikis AS TEXT[])))
) AS picked
GROUP BY wiki
ORDER BY sum(edits) - CASE WHEN :bots THEN 0 ELSE sum(bot_edits) END DESC, wiki
LIMIT :limit
"""


# ---- one user ----------------------------------------------------------------------------------

USER_MINUTES = f"""
SELECT window_start, edit_count FROM {USERS}
WHERE user_name = :user AND window_start >= :start AND window_start < :end
ORDER BY window_start
"""

USER_HOURS = """
SELECT bucket, edits FROM user_edit_rollup
WHERE user_name = :user AND grain = 'hour' AND bucket >= :start AND bucket < :end
ORDER BY bucket
"""


# ---- now: trending pages (migration 0006's trending_pages()) ----------------------------------

#: The end of the newest minute of page_activity: "now" in event time. The row with the newest
#: window_start (the primary key's first column: one index step, where max(window_end) read the
#: whole table) has it: every window is as long.
NEWEST_PAGE_MINUTE = f"SELECT (SELECT window_end FROM {PAGES} ORDER BY window_start DESC LIMIT 1)"

TRENDING_PAGES = """
SELECT wiki, namespace, title, server_name, edits, editors, expected, score
FROM trending_pages(at => :at, horizon => :horizon, baseline => :baseline,
                    min_editors => :min_editors, with_bots => :with_bots, max_rows => :scan,
                    min_growth => :min_growth)
WHERE cardinality(CAST(:wikis AS TEXT[])) = 0 OR wiki = ANY(CAST(:wikis AS TEXT[]))
ORDER BY score DESC, edits DESC, wiki, namespace, title
LIMIT :limit
"""

#: Human edits per minute of the given pages (parallel arrays of wiki, namespace, title).
PAGE_MINUTES = f"""
SELECT p.wiki, p.namespace, p.title, p.window_start, p.edits - p.bot_edits
FROM {PAGES} AS p
JOIN unnest(CAST(:wikis AS TEXT[]), CAST(:namespaces AS INTEGER[]), CAST(:titles AS TEXT[]))
    AS page (wiki, namespace, title) USING (wiki, namespace, title)
WHERE p.window_start >= :start AND p.window_start < :end
"""


# ---- pipeline health ---------------------------------------------------------------------------

LAST_BATCH = f"""
SELECT query_name, batch_id, committed_at, duration_ms, input_rows, rows_written,
       rows_dropped_by_watermark, max_event_time, watermark
FROM {BATCHES}
ORDER BY committed_at DESC
LIMIT 1
"""

BATCHES_IN_SPAN = f"""
SELECT count(*), coalesce(sum(rows_dropped_by_watermark), 0),
       coalesce(sum(unknown_schema_rows), 0)
FROM {BATCHES}
WHERE committed_at >= :start AND committed_at < :end
"""

#: The alerts open now and those of the span (an episode belongs to it when it overlaps it),
#: open ones first, newest first; the wiki filter applies.
ALERTS = """
SELECT kind, wiki, namespace, title, server_name, window_start, window_end, observed, expected,
       score, closed_at IS NULL AS open
FROM alerts
WHERE (closed_at IS NULL OR (window_end > :start AND window_start < :end))
  AND (cardinality(CAST(:wikis AS TEXT[])) = 0 OR wiki = ANY(CAST(:wikis AS TEXT[])))
ORDER BY closed_at IS NULL DESC, window_start DESC, id DESC
LIMIT :limit
"""
