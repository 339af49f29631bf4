"""Every SQL statement of the dashboard, and the functions that run them.

Values are always bound parameters (``:name``), never formatted into the SQL text: a user name
with quotes, ``%``, ``_``, right-to-left or zero-width characters is just a value (the only
text put into SQL are the tables' names, constants). The connection is read-only
(``default_transaction_read_only``): the dashboard reads PostgreSQL only.

Each panel reads rollups for the whole hours and days of a span and the base tables only for
the minutes at its edges (see :func:`dashboards.view.pieces` and migration 0003):

- sums per wiki or over all wikis: ``activity_totals``, ``wiki_activity_rollup``;
- top contributors: for short spans a ``GROUP BY`` over ``user_edit_counts``; for longer ones
  the threshold algorithm over ``user_edit_rollup`` — the best users of every hourly or daily
  bucket that covers the span, the exact sums of those who could make the top, and a bound for
  everyone not seen yet; deeper until no unseen user can enter the top. Exact either way;
- active editors: exact (``COUNT(DISTINCT)``) for short spans, a HyperLogLog estimate from
  ``editor_sketches`` for longer ones (about 2 %).

The plain functions take an :class:`~sqlalchemy.engine.Engine` (the benchmark calls them); the
``cached_*`` functions are the app's: one engine per process (``st.cache_resource``) and results
cached for :data:`CACHE_TTL`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.config import Settings, load_settings_or_exit
from app.config.clients import sqlalchemy_url
from app.config.settings import AppSettings, PostgresSettings
from app.contract import TABLE_PIPELINE_BATCHES, TABLE_USER_EDIT_COUNTS, TABLE_WIKI_ACTIVITY
from app.health import fetch_health, health_url
from dashboards.view import (
    GRAIN_LENGTH,
    MINUTE,
    Grain,
    Span,
    covering_buckets,
    floor,
    nearest_ten_minutes,
    pieces,
    resolution,
    sketch_pieces,
)

#: How long a query result is reused (per distinct view) before it is read again.
CACHE_TTL = timedelta(seconds=5)
#: Spans up to this long are answered from the base tables (exact distinct editors, and the top
#: contributors by a plain GROUP BY); longer ones from the rollups.
DIRECT_LIMIT = timedelta(hours=2)
#: Rows of the top tables.
TOP_CONTRIBUTORS = 50
TOP_WIKIS = 20
#: With bots excluded, per-user panels hide accounts named like bots: user_edit_counts carries
#: no bot flag. A PostgreSQL regular expression, case-insensitive: "bot" ending a word.
BOT_NAME_PATTERN = r"bot\M"
#: Users fetched per bucket in the first round of the threshold algorithm (then x4).
FIRST_DEPTH = 100
#: The HyperLogLog sketches: 2^12 one-byte registers (migration 0003).
SKETCH_SIZE = 4096
#: The worker's /health answers within this or counts as unreachable.
HEARTBEAT_TIMEOUT = 1.0


#: The base tables (the contract's names; the rollups of migration 0003 are the dashboard's own).
USERS, WIKIS, BATCHES = TABLE_USER_EDIT_COUNTS, TABLE_WIKI_ACTIVITY, TABLE_PIPELINE_BATCHES


class DashboardError(Exception):
    """A problem the page shows as a message; ``str(error)`` says what to do."""


class DatabaseUnavailable(DashboardError):
    """PostgreSQL cannot be reached (down, wrong address or password)."""


class SchemaMissing(DashboardError):
    """The database lacks the dashboard's tables: it was not migrated to the code's head."""


# ---- connection --------------------------------------------------------------------------------


def make_engine(postgres: PostgresSettings) -> Engine:
    """An engine on the configured database: read-only sessions, short timeouts, no JIT (it
    costs more than these small queries take), UTC."""
    options = (
        "-c default_transaction_read_only=on -c statement_timeout=15000 -c jit=off -c TimeZone=UTC"
    )
    return create_engine(
        sqlalchemy_url(postgres),  # host, credentials, sslmode, sslrootcert
        pool_size=postgres.pool.max_size,
        max_overflow=0,
        pool_timeout=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 3,
            "application_name": "wikipulse-dashboard",
            "options": options,
        },
    )


def _describe(error: SQLAlchemyError) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


_SCHEMA_CODES = {"42P01", "42703", "42883"}  # undefined table, column, function


def _rows(engine: Engine, statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(statement), dict(params))]
    except DBAPIError as error:
        if getattr(error.orig, "pgcode", None) in _SCHEMA_CODES:
            raise SchemaMissing(
                "the database has no dashboard tables yet (" + _describe(error) + "): "
                "migrate it with `./infra/wikipulse up` (alembic upgrade head)"
            ) from None
        url = engine.url
        raise DatabaseUnavailable(
            f"PostgreSQL at {url.host}:{url.port} (database {url.database}) cannot be read: "
            f"{_describe(error)}"
        ) from None
    except SQLAlchemyError as error:
        raise DatabaseUnavailable(f"PostgreSQL cannot be read: {_describe(error)}") from None


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


# ---- bounds of the data ------------------------------------------------------------------------

SQL_BOUNDS = f"""
SELECT least((SELECT min(window_start) FROM {WIKIS}),
             (SELECT min(window_start) FROM {USERS})) AS oldest,
       greatest((SELECT window_end FROM {WIKIS} ORDER BY window_start DESC LIMIT 1),
                (SELECT window_end FROM {USERS} ORDER BY window_start DESC LIMIT 1))
           AS newest_end
"""


@dataclass(frozen=True)
class Bounds:
    oldest: datetime | None  # start of the oldest window
    newest_end: datetime | None  # end of the newest window

    @property
    def empty(self) -> bool:
        return self.oldest is None


def bounds(engine: Engine) -> Bounds:
    [(oldest, newest_end)] = _rows(engine, SQL_BOUNDS, {})
    return Bounds(oldest, newest_end)


SQL_WIKIS = """
SELECT wiki FROM wiki_activity_rollup WHERE grain = 'day'
GROUP BY wiki ORDER BY sum(edits) DESC, wiki
"""


def wikis(engine: Engine) -> list[str]:
    """Every wiki with data, the busiest first (the wiki filter's options)."""
    return [wiki for (wiki,) in _rows(engine, SQL_WIKIS, {})]


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

SQL_ACTIVITY_ALL_WIKIS = f"""
SELECT {_SUMS}
FROM activity_totals
WHERE (grain = 'minute' AND ((bucket >= :m1_start AND bucket < :m1_end)
                          OR (bucket >= :m2_start AND bucket < :m2_end)))
   OR {_IN_PIECES_ROLLUP}
"""

SQL_ACTIVITY_SOME_WIKIS = f"""
SELECT {_SUMS}
FROM (
    SELECT {_COUNTERS} FROM {WIKIS}
    WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND {_IN_PIECES_MINUTES}
    UNION ALL
    SELECT {_COUNTERS} FROM wiki_activity_rollup
    WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND {_IN_PIECES_ROLLUP}
) AS picked
"""


@dataclass(frozen=True)
class Activity:
    """Sums of ``wiki_activity`` over a span."""

    edits: int = 0
    bot_edits: int = 0
    anonymous_edits: int = 0
    new_pages: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0

    @property
    def human_edits(self) -> int:
        return self.edits - self.bot_edits

    def counted_edits(self, *, bots: bool) -> int:
        """Edits, or with ``bots=False`` those without the bot flag."""
        return self.edits if bots else self.human_edits

    @property
    def bot_share(self) -> float | None:
        return self.bot_edits / self.edits if self.edits else None


def activity(engine: Engine, *, span: Span, wikis: Sequence[str] = ()) -> Activity:
    """The counters of ``wiki_activity`` summed over ``span`` (and ``wikis``, if any)."""
    params: dict[str, Any] = pieces(span).params()
    if wikis:
        statement = SQL_ACTIVITY_SOME_WIKIS
        params["wikis"] = list(wikis)
    else:
        statement = SQL_ACTIVITY_ALL_WIKIS
    [row] = _rows(engine, statement, params)
    return Activity(*(_int(value) for value in row))


# ---- active editors ----------------------------------------------------------------------------

#: count(*) over DISTINCT hashes the names; count(DISTINCT ...) would sort them (twice slower).
SQL_EDITORS_EXACT = f"""
SELECT count(*) FROM (
    SELECT DISTINCT user_name FROM {USERS}
    WHERE window_start >= :start AND window_start < :end
) AS editors
"""

SQL_EDITOR_SKETCHES = """
SELECT s.registers
FROM unnest(CAST(:grains AS TEXT[]), CAST(:buckets AS TIMESTAMPTZ[])) AS b (grain, bucket)
JOIN editor_sketches AS s ON s.grain = b.grain AND s.bucket = b.bucket
"""


@dataclass(frozen=True)
class Editors:
    count: int
    estimated: bool  # a HyperLogLog estimate (about 2 %), else exact


def estimate_distinct(registers: np.ndarray[Any, np.dtype[np.uint8]]) -> float:
    """HyperLogLog's estimate from merged registers (with the linear-counting correction for
    small counts, which is exact-ish while most registers are empty)."""
    size = registers.size
    if size == 0:
        return 0.0
    alpha = 0.7213 / (1 + 1.079 / size)
    raw = alpha * size * size / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * size and zeros:
        return size * math.log(size / zeros)
    return raw


def merge_sketches(sketches: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    if not sketches:
        return np.zeros(SKETCH_SIZE, dtype=np.uint8)
    stacked = np.stack([np.frombuffer(bytes(sketch), dtype=np.uint8) for sketch in sketches])
    merged: np.ndarray[Any, np.dtype[np.uint8]] = stacked.max(axis=0)
    return merged


def active_editors(engine: Engine, *, span: Span) -> Editors:
    """Distinct user names with an edit in the span (bots included: there is no flag).

    Exact for short spans. Longer ones merge the sketches of their whole days, hours and ten
    minutes, the span's ends moved to the nearest ten minutes (a few minutes of a day or more:
    well inside the estimate's own error of about 2 %).
    """
    if span.length <= DIRECT_LIMIT:
        [(count,)] = _rows(engine, SQL_EDITORS_EXACT, {"start": span.start, "end": span.end})
        return Editors(_int(count), estimated=False)
    whole, _ = sketch_pieces(Span(nearest_ten_minutes(span.start), nearest_ten_minutes(span.end)))
    params = {"grains": [grain for grain, _ in whole], "buckets": [start for _, start in whole]}
    sketches = [registers for (registers,) in _rows(engine, SQL_EDITOR_SKETCHES, params)]
    return Editors(round(estimate_distinct(merge_sketches(sketches))), estimated=True)


# ---- timeline ----------------------------------------------------------------------------------

SQL_TIMELINE_ALL_WIKIS = """
SELECT bucket, edits, bot_edits, anonymous_edits
FROM activity_totals
WHERE grain = :grain AND bucket >= :start AND bucket < :end
ORDER BY bucket
"""

SQL_TIMELINE_MINUTES_SOME_WIKIS = f"""
SELECT window_start, sum(edits), sum(bot_edits), sum(anonymous_edits)
FROM {WIKIS}
WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND window_start >= :start AND window_start < :end
GROUP BY window_start
ORDER BY window_start
"""

SQL_TIMELINE_HOURS_SOME_WIKIS = """
SELECT bucket, sum(edits), sum(bot_edits), sum(anonymous_edits)
FROM wiki_activity_rollup
WHERE wiki = ANY(CAST(:wikis AS TEXT[])) AND grain = 'hour'
  AND bucket >= :start AND bucket < :end
GROUP BY bucket
ORDER BY bucket
"""

#: The timeline's series, bottom to top.
BOTS, REGISTERED, ANONYMOUS = "bots", "registered humans", "anonymous"
SERIES = (BOTS, REGISTERED, ANONYMOUS)


def _grid(span: Span, grain: Grain) -> pd.DatetimeIndex:
    step = "1min" if grain == "minute" else "1h"
    start = floor(span.start, grain)
    last = span.end - MINUTE
    return pd.date_range(start, max(start, floor(last, grain)), freq=step, name="time")


def timeline(engine: Engine, *, span: Span, wikis: Sequence[str] = ()) -> pd.DataFrame:
    """Edits per minute in the span, one row per minute (spans up to a day) or per hour (then
    the hour's average per minute), columns :data:`SERIES`; minutes without data are zeros.
    Hourly buckets cover the whole hours that the span touches."""
    grain = resolution(span)
    start = floor(span.start, grain)
    params: dict[str, Any] = {"start": start, "end": span.end, "grain": grain}
    if not wikis:
        statement = SQL_TIMELINE_ALL_WIKIS
    else:
        params["wikis"] = list(wikis)
        statement = (
            SQL_TIMELINE_MINUTES_SOME_WIKIS if grain == "minute" else SQL_TIMELINE_HOURS_SOME_WIKIS
        )
    rows = _rows(engine, statement, params)
    frame = pd.DataFrame(rows, columns=["time", "edits", "bot_edits", "anonymous_edits"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame = frame.set_index("time").astype("int64").reindex(_grid(span, grain), fill_value=0)
    per_minute = 1 if grain == "minute" else 60
    result = pd.DataFrame(
        {
            BOTS: frame["bot_edits"],
            REGISTERED: frame["edits"] - frame["bot_edits"] - frame["anonymous_edits"],
            ANONYMOUS: frame["anonymous_edits"],
        },
        index=frame.index,
    )
    return (result / per_minute).reset_index()


# ---- top contributors --------------------------------------------------------------------------

#: The seed's top_contributors_hourly, for any span (the same ORDER BY and LIMIT).
SQL_TOP_USERS_DIRECT = f"""
SELECT user_name, sum(edit_count) AS edits
FROM {USERS}
WHERE window_start >= :start AND window_start < :end
  AND (:bots OR user_name !~* :bot_pattern)
GROUP BY user_name
ORDER BY edits DESC, user_name
LIMIT :limit
"""

SQL_TOP_USERS_PER_BUCKET = """
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

SQL_USER_SUMS = f"""
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


def prune_candidates(
    listed: Sequence[tuple[int, str, int]],
    *,
    inside: set[int],
    depth: int,
    limit: int,
    known: Mapping[str, int],
) -> tuple[int, list[str]]:
    """One round of the threshold algorithm, from the lists alone (no query).

    ``listed``: (list position, user, edits in that bucket), each list cut at ``depth``;
    ``inside``: the positions of buckets wholly inside the span (the others overhang its edges,
    so their values only bound the user's edits in the span); ``known``: exact sums already
    read. Returns the bound on the sum of any user missing from every list, and the listed users
    whose exact sum must be read: those whose upper bound reaches the ``limit``-th best lower
    bound. Everyone else cannot enter the top.
    """
    lengths: dict[int, int] = {}
    last: dict[int, int] = {}
    for position, _, edits in listed:
        lengths[position] = lengths.get(position, 0) + 1
        last[position] = min(last.get(position, edits), edits)
    # A complete list (shorter than depth) leaves nothing unseen in its bucket.
    cut_value = {p: last[p] if n >= depth else 0 for p, n in lengths.items()}
    unseen = sum(cut_value.values())
    lower: dict[str, int] = {}
    upper: dict[str, int] = {}
    for position, name, edits in listed:
        if position in inside:
            lower[name] = lower.get(name, 0) + edits
        upper[name] = upper.get(name, unseen) + edits - cut_value[position]
    for name, exact in known.items():
        if name in upper:
            lower[name] = upper[name] = exact
    best_lower = sorted((lower.get(name, 0) for name in upper), reverse=True)
    threshold = best_lower[limit - 1] if len(best_lower) >= limit else 0
    wanted = sorted(n for n, high in upper.items() if high >= threshold and n not in known)
    return unseen, wanted


def _top_by_threshold(
    engine: Engine, *, span: Span, bots: bool, limit: int
) -> list[tuple[str, int]]:
    """The exact top ``limit`` users of a long span (Fagin's threshold algorithm).

    Every bucket that covers the span lists its users by edits. A user missing from all the
    lists (cut at ``depth``) has at most the sum of each list's last value; a listed user at
    most what the lists show plus that for the lists that miss them. Exact sums are read only
    for users who could still make the top; once the ``limit``-th best exact sum beats the
    bound on the unseen, the top is final. Otherwise the lists go deeper.
    """
    covering = covering_buckets(span)
    if not covering:
        return []
    base = {
        "grains": [grain for grain, _ in covering],
        "buckets": [bucket for _, bucket in covering],
        "bots": bots,
        "bot_pattern": BOT_NAME_PATTERN,
    }
    inside = {
        position
        for position, (grain, start) in enumerate(covering, start=1)
        if start >= span.start and start + GRAIN_LENGTH[grain] <= span.end
    }
    exact_params: dict[str, Any] = pieces(span).params()
    totals: dict[str, int] = {}
    depth = max(FIRST_DEPTH, limit)
    while True:
        listed = _rows(engine, SQL_TOP_USERS_PER_BUCKET, {**base, "depth": depth})
        unseen, wanted = prune_candidates(
            listed, inside=inside, depth=depth, limit=limit, known=totals
        )
        if wanted:
            sums = _rows(engine, SQL_USER_SUMS, {**exact_params, "names": wanted})
            totals.update((name, _int(edits)) for name, edits in sums)
        ranked = sorted(
            ((name, edits) for name, edits in totals.items() if edits > 0),
            key=lambda item: (-item[1], item[0]),
        )
        if unseen == 0 or (len(ranked) >= limit and ranked[limit - 1][1] > unseen):
            return ranked[:limit]
        depth *= 4


def top_contributors(
    engine: Engine, *, span: Span, bots: bool = True, limit: int = TOP_CONTRIBUTORS
) -> pd.DataFrame:
    """Columns ``user_name``, ``edits``: the users with the most edits in the span (ties by
    name), as the seed's ``top_contributors_hourly`` orders them."""
    if span.length <= DIRECT_LIMIT:
        params = {
            "start": span.start,
            "end": span.end,
            "bots": bots,
            "bot_pattern": BOT_NAME_PATTERN,
            "limit": limit,
        }
        ranked = [
            (name, _int(edits)) for name, edits in _rows(engine, SQL_TOP_USERS_DIRECT, params)
        ]
    else:
        ranked = _top_by_threshold(engine, span=span, bots=bots, limit=limit)
    return pd.DataFrame(ranked, columns=["user_name", "edits"]).astype({"edits": "int64"})


# ---- top wikis ---------------------------------------------------------------------------------

_WIKI_COUNTERS = "wiki, edits, bot_edits, new_pages, bytes_added"

SQL_TOP_WIKIS = f"""
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


def top_wikis(
    engine: Engine,
    *,
    span: Span,
    wikis: Sequence[str] = (),
    bots: bool = True,
    limit: int = TOP_WIKIS,
) -> pd.DataFrame:
    """Columns ``wiki``, ``edits`` (without bot edits when ``bots`` is false), ``bot_edits``,
    ``new_pages``, ``bytes_added``: the wikis with the most edits in the span."""
    params = {**pieces(span).params(), "wikis": list(wikis), "bots": bots, "limit": limit}
    rows = _rows(engine, SQL_TOP_WIKIS, params)
    frame = pd.DataFrame(rows, columns=["wiki", "edits", "bot_edits", "new_pages", "bytes_added"])
    frame = frame.astype({c: "int64" for c in ("edits", "bot_edits", "new_pages", "bytes_added")})
    if not bots:
        frame["edits"] = frame["edits"] - frame["bot_edits"]
    return frame


# ---- one user ----------------------------------------------------------------------------------

SQL_USER_MINUTES = f"""
SELECT window_start, edit_count FROM {USERS}
WHERE user_name = :user AND window_start >= :start AND window_start < :end
ORDER BY window_start
"""

SQL_USER_HOURS = """
SELECT bucket, edits FROM user_edit_rollup
WHERE user_name = :user AND grain = 'hour' AND bucket >= :start AND bucket < :end
ORDER BY bucket
"""


def user_history(engine: Engine, *, span: Span, user: str) -> pd.DataFrame:
    """Columns ``time``, ``edits``: the user's edits per minute (spans up to a day) or per
    hour. The name is matched exactly, as given."""
    grain = resolution(span)
    statement = SQL_USER_MINUTES if grain == "minute" else SQL_USER_HOURS
    rows = _rows(
        engine, statement, {"user": user, "start": floor(span.start, grain), "end": span.end}
    )
    frame = pd.DataFrame(rows, columns=["time", "edits"]).astype({"edits": "int64"})
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


# ---- pipeline health ---------------------------------------------------------------------------

SQL_LAST_BATCH = f"""
SELECT query_name, batch_id, committed_at, duration_ms, input_rows, rows_written,
       rows_dropped_by_watermark, max_event_time, watermark
FROM {BATCHES}
ORDER BY committed_at DESC
LIMIT 1
"""

SQL_BATCHES_IN_SPAN = f"""
SELECT count(*), coalesce(sum(rows_dropped_by_watermark), 0)
FROM {BATCHES}
WHERE committed_at >= :start AND committed_at < :end
"""


@dataclass(frozen=True)
class Batch:
    query_name: str
    batch_id: int
    committed_at: datetime
    duration_ms: int | None
    input_rows: int | None
    rows_written: int
    rows_dropped_by_watermark: int | None
    max_event_time: datetime | None
    watermark: datetime | None


@dataclass(frozen=True)
class PipelineHealth:
    last_batch: Batch | None
    batches_in_span: int
    dropped_in_span: int


def pipeline_health(engine: Engine, *, span: Span) -> PipelineHealth:
    last = _rows(engine, SQL_LAST_BATCH, {})
    [(count, dropped)] = _rows(engine, SQL_BATCHES_IN_SPAN, {"start": span.start, "end": span.end})
    return PipelineHealth(Batch(*last[0]) if last else None, _int(count), _int(dropped))


def worker_heartbeat(web: AppSettings, timeout: float = HEARTBEAT_TIMEOUT) -> dict[str, Any] | None:
    """The worker's ``/health`` report (JSON), or ``None`` when it does not answer. Not the
    database: the worker's own web server, read over HTTP when it is reachable."""
    return fetch_health(health_url(web), timeout)


# ---- the app's: one engine, cached results -----------------------------------------------------


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The dashboard's settings (``SystemExit`` with the message on stderr when invalid)."""
    return load_settings_or_exit("dashboard")


@st.cache_resource(show_spinner=False)
def engine() -> Engine:
    """The app's one engine (and connection pool)."""
    return make_engine(settings().postgres)


_TTL = CACHE_TTL.total_seconds()


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_bounds() -> Bounds:
    return bounds(engine())


@st.cache_data(ttl=60, show_spinner=False)
def cached_wikis() -> list[str]:
    return wikis(engine())


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_activity(span: Span, wikis: tuple[str, ...]) -> Activity:
    return activity(engine(), span=span, wikis=wikis)


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_active_editors(span: Span) -> Editors:
    return active_editors(engine(), span=span)


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_timeline(span: Span, wikis: tuple[str, ...]) -> pd.DataFrame:
    return timeline(engine(), span=span, wikis=wikis)


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_top_contributors(span: Span, bots: bool) -> pd.DataFrame:
    return top_contributors(engine(), span=span, bots=bots)


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_top_wikis(span: Span, wikis: tuple[str, ...], bots: bool) -> pd.DataFrame:
    return top_wikis(engine(), span=span, wikis=wikis, bots=bots)


@st.cache_data(ttl=_TTL, show_spinner=False, max_entries=200)
def cached_user_history(span: Span, user: str) -> pd.DataFrame:
    return user_history(engine(), span=span, user=user)


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_pipeline_health(span: Span) -> PipelineHealth:
    return pipeline_health(engine(), span=span)


@st.cache_data(ttl=_TTL, show_spinner=False)
def cached_worker_heartbeat() -> dict[str, Any] | None:
    return worker_heartbeat(settings().app)
