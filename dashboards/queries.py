"""The dashboard's data access: run the statements of :mod:`dashboards.sql` and turn their rows
into the values and DataFrames the panels show.

The connection (:mod:`dashboards.database`) is read-only (``default_transaction_read_only``):
the dashboard reads PostgreSQL only. Every function takes an
:class:`~sqlalchemy.engine.Engine` and reads afresh (the benchmark calls them so);
:mod:`dashboards.cache` is the page's cached layer over them.

- sums per wiki or over all wikis: ``activity_totals``, ``wiki_activity_rollup``;
- top contributors: for short spans a ``GROUP BY`` over ``user_edit_counts``; for longer ones
  the threshold algorithm (:mod:`dashboards.algorithms`) over ``user_edit_rollup``, exact too;
- active editors: exact (``COUNT(DISTINCT)``) for short spans, a HyperLogLog estimate from
  ``editor_sketches`` for longer ones (about 2 %).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from app.config.settings import TrendingSettings
from dashboards import algorithms, sql
from dashboards.database import fetch_rows
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

#: Spans up to this long are answered from the base tables (exact distinct editors, and the top
#: contributors by a plain GROUP BY); longer ones from the rollups.
DIRECT_LIMIT = timedelta(hours=2)
#: Rows of the top tables.
TOP_CONTRIBUTORS = 50
TOP_WIKIS = 20
ALERTS = 50
#: How far back the trending pages' sparklines go (from the newest minute).
SPARKLINE = timedelta(hours=1)
#: Users fetched per bucket in the first round of the threshold algorithm (then x4).
FIRST_DEPTH = 100


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


# ---- bounds of the data ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    oldest: datetime | None  # start of the oldest window
    newest_end: datetime | None  # end of the newest window

    @property
    def empty(self) -> bool:
        return self.oldest is None


def bounds(engine: Engine) -> Bounds:
    [(oldest, newest_end)] = fetch_rows(engine, sql.BOUNDS, {})
    return Bounds(oldest, newest_end)


def wikis(engine: Engine) -> list[str]:
    """Every wiki with data, the busiest first (the wiki filter's options)."""
    return [wiki for (wiki,) in fetch_rows(engine, sql.WIKIS_BY_EDITS, {})]


# ---- sums of wiki_activity ---------------------------------------------------------------------


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
        statement = sql.ACTIVITY_SOME_WIKIS
        params["wikis"] = list(wikis)
    else:
        statement = sql.ACTIVITY_ALL_WIKIS
    [row] = fetch_rows(engine, statement, params)
    return Activity(*(_int(value) for value in row))


# ---- active editors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Editors:
    count: int
    estimated: bool  # a HyperLogLog estimate (about 2 %), else exact


def active_editors(engine: Engine, *, span: Span) -> Editors:
    """Distinct user names with an edit in the span (bots included: there is no flag).

    Exact for short spans. Longer ones merge the sketches of their whole days, hours and ten
    minutes, the span's ends moved to the nearest ten minutes (a few minutes of a day or more:
    well inside the estimate's own error of about 2 %).
    """
    if span.length <= DIRECT_LIMIT:
        [(count,)] = fetch_rows(engine, sql.EDITORS_EXACT, {"start": span.start, "end": span.end})
        return Editors(_int(count), estimated=False)
    whole, _ = sketch_pieces(Span(nearest_ten_minutes(span.start), nearest_ten_minutes(span.end)))
    params = {"grains": [grain for grain, _ in whole], "buckets": [start for _, start in whole]}
    sketches = [registers for (registers,) in fetch_rows(engine, sql.EDITOR_SKETCHES, params)]
    estimate = algorithms.estimate_distinct(algorithms.merge_sketches(sketches))
    return Editors(round(estimate), estimated=True)


# ---- timeline ----------------------------------------------------------------------------------

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
        statement = sql.TIMELINE_ALL_WIKIS
    else:
        params["wikis"] = list(wikis)
        statement = (
            sql.TIMELINE_MINUTES_SOME_WIKIS if grain == "minute" else sql.TIMELINE_HOURS_SOME_WIKIS
        )
    rows = fetch_rows(engine, statement, params)
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


def _top_by_threshold(
    engine: Engine, *, span: Span, bots: bool, limit: int
) -> list[tuple[str, int]]:
    """The exact top ``limit`` users of a long span: the threshold algorithm's rounds
    (:mod:`dashboards.algorithms`), each list deeper than the one before, until it is final."""
    covering = covering_buckets(span)
    if not covering:
        return []
    base = {
        "grains": [grain for grain, _ in covering],
        "buckets": [bucket for _, bucket in covering],
        "bots": bots,
        "bot_pattern": sql.BOT_NAME_PATTERN,
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
        listed = fetch_rows(engine, sql.TOP_USERS_PER_BUCKET, {**base, "depth": depth})
        unseen, wanted = algorithms.prune_candidates(
            listed, inside=inside, depth=depth, limit=limit, known=totals
        )
        if wanted:
            sums = fetch_rows(engine, sql.USER_SUMS, {**exact_params, "names": wanted})
            totals.update((name, _int(edits)) for name, edits in sums)
        ranked = algorithms.rank(totals)
        if algorithms.top_is_final(ranked, unseen=unseen, limit=limit):
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
            "bot_pattern": sql.BOT_NAME_PATTERN,
            "limit": limit,
        }
        ranked = [
            (name, _int(edits)) for name, edits in fetch_rows(engine, sql.TOP_USERS_DIRECT, params)
        ]
    else:
        ranked = _top_by_threshold(engine, span=span, bots=bots, limit=limit)
    return pd.DataFrame(ranked, columns=["user_name", "edits"]).astype({"edits": "int64"})


# ---- top wikis ---------------------------------------------------------------------------------


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
    rows = fetch_rows(engine, sql.TOP_WIKIS, params)
    frame = pd.DataFrame(rows, columns=["wiki", "edits", "bot_edits", "new_pages", "bytes_added"])
    frame = frame.astype({c: "int64" for c in ("edits", "bot_edits", "new_pages", "bytes_added")})
    if not bots:
        frame["edits"] = frame["edits"] - frame["bot_edits"]
    return frame


# ---- now: trending pages ---------------------------------------------------------------------


def trending_pages(
    engine: Engine, trending: TrendingSettings, *, wikis: Sequence[str] = ()
) -> pd.DataFrame:
    """Columns ``wiki``, ``namespace``, ``title``, ``server_name``, ``edits``, ``editors``,
    ``expected``, ``score``, ``last_hour`` (the page's edits per minute over the
    :data:`SPARKLINE` before the newest minute, oldest first, bots left out): the pages trending
    now, at most ``trending.max_rows``, as migration 0006's ``trending_pages()`` scores them with
    the ``alerts.trending`` knobs, in event time (its horizon ends at the newest minute of
    page_activity). ``frame.attrs["at"]``: that minute's end."""
    limit = trending.max_rows
    columns = ["wiki", "namespace", "title", "server_name", "edits", "editors", "expected",
               "score"]  # fmt: skip
    [(at,)] = fetch_rows(engine, sql.NEWEST_PAGE_MINUTE, {})
    rows = [] if at is None else fetch_rows(
        engine,
        sql.TRENDING_PAGES,
        # A wiki filter is applied to the scored list: score enough pages for it.
        {"at": at, "wikis": list(wikis), "scan": 20 * limit if wikis else limit, "limit": limit,
         "horizon": trending.horizon, "baseline": trending.baseline,
         "min_editors": trending.min_editors, "with_bots": trending.with_bots,
         "min_growth": trending.min_growth},
    )  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns).astype(
        {"namespace": "int64", "edits": "int64", "editors": "int64", "expected": "float64",
         "score": "float64"}
    )  # fmt: skip
    frame.attrs["at"] = at
    if frame.empty:
        frame["last_hour"] = pd.Series(dtype=object)
        return frame
    minutes = fetch_rows(
        engine,
        sql.PAGE_MINUTES,
        {"wikis": frame["wiki"].tolist(), "namespaces": frame["namespace"].tolist(),
         "titles": frame["title"].tolist(), "start": at - SPARKLINE, "end": at},
    )  # fmt: skip
    slots, first = int(SPARKLINE / MINUTE), at - SPARKLINE
    pages = list(zip(frame["wiki"], frame["namespace"], frame["title"], strict=True))
    series = {page: [0] * slots for page in pages}
    for wiki, namespace, title, start, edits in minutes:
        series[(wiki, namespace, title)][int((start - first) / MINUTE)] = int(edits)
    frame["last_hour"] = [series[page] for page in pages]
    return frame


# ---- now: alerts ------------------------------------------------------------------------------


def alerts(engine: Engine, *, span: Span, wikis: Sequence[str] = ()) -> pd.DataFrame:
    """Columns ``kind``, ``wiki``, ``namespace``, ``title``, ``server_name``, ``window_start``,
    ``window_end``, ``observed``, ``expected``, ``score``, ``open``: the alerts open now and the
    episodes that overlap the span (migration 0007), open ones first, newest first, at most
    :data:`ALERTS`."""
    columns = ["kind", "wiki", "namespace", "title", "server_name", "window_start", "window_end",
               "observed", "expected", "score", "open"]  # fmt: skip
    rows = fetch_rows(engine, sql.ALERTS, {"start": span.start, "end": span.end,
                                      "wikis": list(wikis), "limit": ALERTS})  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("window_start", "window_end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


# ---- one user ----------------------------------------------------------------------------------


def user_history(engine: Engine, *, span: Span, user: str) -> pd.DataFrame:
    """Columns ``time``, ``edits``: the user's edits per minute (spans up to a day) or per
    hour. The name is matched exactly, as given."""
    grain = resolution(span)
    statement = sql.USER_MINUTES if grain == "minute" else sql.USER_HOURS
    rows = fetch_rows(
        engine, statement, {"user": user, "start": floor(span.start, grain), "end": span.end}
    )
    frame = pd.DataFrame(rows, columns=["time", "edits"]).astype({"edits": "int64"})
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


# ---- pipeline health ---------------------------------------------------------------------------


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
    #: Typed records of a schema version the Spark job does not read, skipped.
    unknown_in_span: int


def pipeline_health(engine: Engine, *, span: Span) -> PipelineHealth:
    last = fetch_rows(engine, sql.LAST_BATCH, {})
    params = {"start": span.start, "end": span.end}
    [(count, dropped, unknown)] = fetch_rows(engine, sql.BATCHES_IN_SPAN, params)
    return PipelineHealth(
        Batch(*last[0]) if last else None, _int(count), _int(dropped), _int(unknown)
    )
