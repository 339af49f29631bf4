"""DataFrame -> DataFrame: the typed topic's records -> windowed aggregates. Pure: no I/O.

The same functions serve the streaming job, batch queries (the benchmark, a backfill check) and
the unit tests; ``withWatermark`` is a no-op on a batch DataFrame.

What is counted (the definitions the golden tests check):

- an **edit** is an event of type ``edit`` or ``new``;
- ``user_edit_counts``: edits per user name per window; edits whose user name is suppressed
  (null) are not attributed to anyone;
- ``wiki_activity``, per wiki per window:
  ``edits`` (every edit, with or without a user name), ``new_pages`` (type ``new``),
  ``bot_edits`` (edits with the bot flag), ``anonymous_edits`` (edits by an IP address or a
  temporary account: ``user_kind`` anonymous or temporary; a flagged bot is never anonymous),
  ``bytes_added`` / ``bytes_removed`` (over edits only: the sum of the positive
  ``length_delta`` values, and of the magnitudes of the negative ones; other types carry no
  length), ``events`` (every event, all types);
- ``page_activity``, per page (wiki, namespace, title) per window, over its edits only: the
  counters of ``wiki_activity`` but ``new_pages`` (``new_page``: the window holds the page's
  creation) and ``events``, with ``editor_names`` (the distinct user names of its edits, sorted;
  a suppressed name is nobody's), ``bot_names`` (those with the bot flag) and ``editors`` (their
  number); ``server_name`` (its wiki's host, for a link to the page);
- an event belongs to the window ``[start, start + duration)`` that holds its ``event_time``;
  windows are aligned to the epoch (UTC).

All three aggregates come out of **one** streaming aggregation (Spark allows only one in update
mode): :func:`aggregate` turns each event into one input row per aggregate it counts in — a
``wiki_activity`` row always, a ``user_edit_counts`` row for an edit with a user name, a
``page_activity`` row for an edit — and groups them by (window, aggregate, key, namespace,
title; the last two null but for pages). :func:`user_edit_counts`, :func:`wiki_activity` and
:func:`page_activity` take the tables apart again.

Late data: the aggregation drops an input row when its window ended at or before the watermark
(the newest event time seen minus ``spark.windowing.watermark``). Spark reports the dropped rows
as ``numRowsDroppedByWatermark``, counted after its partial aggregation: one per late (window,
aggregate, key) per Kafka partition and micro-batch, not one per event. Non-zero means late
events were dropped.
"""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from app.config.values import spark_interval
from app.contract import (
    EDIT_TYPES,
    HEADER_SCHEMA,
    HEADER_SCHEMA_VERSION,
    SCHEMA_VERSION,
    WIKI_ACTIVITY_COUNTERS,
    ChangeType,
    UserKind,
    contract,
)
from spark import (
    SCHEMA_CHECK,
    TABLE_PAGE_ACTIVITY,
    TABLE_USER_EDIT_COUNTS,
    TABLE_WIKI_ACTIVITY,
    UNKNOWN_SCHEMA_ROWS,
)
from spark.schema import event_schema

__all__ = [
    "AGGREGATE_COLUMNS",
    "PAGE_ACTIVITY",
    "PAGE_COLUMNS",
    "USER_EDIT_COUNTS",
    "WIKI_ACTIVITY",
    "aggregate",
    "known_schema_only",
    "page_activity",
    "parse_events",
    "sink_rows",
    "user_edit_counts",
    "wiki_activity",
    "with_watermark",
]

#: Values of the ``aggregate`` column: the table each aggregated row belongs to.
USER_EDIT_COUNTS = TABLE_USER_EDIT_COUNTS
WIKI_ACTIVITY = TABLE_WIKI_ACTIVITY
PAGE_ACTIVITY = TABLE_PAGE_ACTIVITY

#: The counters of :func:`aggregate`, in order (``wiki_activity``'s columns).
AGGREGATE_COLUMNS = WIKI_ACTIVITY_COUNTERS
#: What :func:`aggregate` adds for a page (null, or empty, in the other aggregates' rows).
PAGE_COLUMNS = ("namespace", "title", "server_name", "editor_names", "bot_names")

_EDIT_TYPES = sorted(str(kind) for kind in EDIT_TYPES)
_ANONYMOUS_KINDS = [str(UserKind.ANONYMOUS), str(UserKind.TEMPORARY)]


def _header(name: str) -> Column:
    """The first value of the record header ``name`` as text; null when the record has none."""
    matching = F.filter(F.col("headers"), lambda header: header["key"] == F.lit(name))
    return F.element_at(matching, 1)["value"].cast("string")


def known_schema_only(records: DataFrame, version: int = SCHEMA_VERSION) -> DataFrame:
    """Kafka records (read with ``includeHeaders``) whose ``schema`` and ``schema-version``
    headers name the contract this job reads; the others (another version, or no header) are
    never parsed with the wrong schema. They are counted instead, per micro-batch, as the
    observed metric :data:`UNKNOWN_SCHEMA_ROWS` of :data:`SCHEMA_CHECK`, which the progress
    report carries into ``pipeline_batches.unknown_schema_rows``."""
    known = (_header(HEADER_SCHEMA_VERSION) == F.lit(str(version))) & (
        _header(HEADER_SCHEMA) == F.lit(contract(version).name)
    )
    flagged = records.withColumn("known_schema", F.coalesce(known, F.lit(False)))
    observed = flagged.observe(
        SCHEMA_CHECK, F.count(F.when(~F.col("known_schema"), 1)).alias(UNKNOWN_SCHEMA_ROWS)
    )
    return observed.where(F.col("known_schema")).drop("known_schema")


#: Where each version keeps what version 1 has as a top-level column: the aggregation reads
#: version 1's columns, whichever version the records are in.
_AS_VERSION_1: dict[int, dict[str, str]] = {
    1: {},
    2: {"user": "editor.name", "user_kind": "editor.kind", "bot": "editor.bot"},
}


def parse_events(records: DataFrame, version: int = SCHEMA_VERSION) -> DataFrame:
    """Kafka records (a binary ``value``) of one version of the typed event -> one row per
    event, with version 1's columns (what :func:`aggregate` reads).

    A value that is not a typed event (not JSON, no event time or wiki) is dropped: the worker
    writes only validated events, so there is nothing to dead-letter here.
    """
    parsed = records.select(
        F.from_json(F.col("value").cast("string"), event_schema(version)).alias("event")
    ).select("event.*")
    moved = _AS_VERSION_1[version]
    if moved:
        parsed = parsed.select(
            *(F.col(name) for name in parsed.columns if name != "editor"),
            *(F.col(path).alias(name) for name, path in moved.items()),
        )
    return parsed.where(
        F.col("event_time").isNotNull() & F.col("wiki").isNotNull() & F.col("type").isNotNull()
    )


def with_watermark(events: DataFrame, delay: timedelta) -> DataFrame:
    """Event time is the typed event's ``event_time``; events later than ``delay`` behind the
    newest event seen are dropped by the aggregation (and their windows' state evicted)."""
    return events.withWatermark("event_time", spark_interval(delay))


def _counted(condition: Column) -> Column:
    return F.sum(F.when(condition, F.lit(1)).otherwise(F.lit(0))).cast("long")


def _summed(condition: Column, value: Column) -> Column:
    return F.sum(F.when(condition, value).otherwise(F.lit(0))).cast("long")


def aggregate(events: DataFrame, window: timedelta) -> DataFrame:
    """Events -> the aggregated rows of the three tables, one stateful aggregation.

    Columns: ``window`` (struct start/end), ``aggregate`` (:data:`USER_EDIT_COUNTS`,
    :data:`WIKI_ACTIVITY` or :data:`PAGE_ACTIVITY`), ``key`` (the user name, or the wiki), then
    :data:`AGGREGATE_COLUMNS` and :data:`PAGE_COLUMNS`. In a ``user_edit_counts`` or
    ``page_activity`` row every counted event is an edit.
    """
    is_edit = F.col("type").isin(_EDIT_TYPES)
    by_user = F.struct(F.lit(USER_EDIT_COUNTS).alias("aggregate"), F.col("user").alias("key"))
    by_wiki = F.struct(F.lit(WIKI_ACTIVITY).alias("aggregate"), F.col("wiki").alias("key"))
    by_page = F.struct(F.lit(PAGE_ACTIVITY).alias("aggregate"), F.col("wiki").alias("key"))
    targets = F.array(
        by_wiki,
        F.when(is_edit & F.col("user").isNotNull(), by_user),
        F.when(is_edit, by_page),
    )
    rows = events.select(
        F.window("event_time", spark_interval(window)).alias("window"),
        F.explode(targets).alias("target"),
        is_edit.alias("is_edit"),
        (F.col("type") == str(ChangeType.NEW)).alias("is_new"),
        F.col("bot"),
        F.col("user_kind").isin(_ANONYMOUS_KINDS).alias("is_anonymous"),
        F.col("length_delta"),
        F.col("namespace"),
        F.col("title"),
        F.col("server_name"),
        F.col("user"),
    ).where(F.col("target").isNotNull())
    edit = F.col("is_edit")
    delta = F.col("length_delta")
    page = F.col("target.aggregate") == F.lit(PAGE_ACTIVITY)
    return rows.groupBy(
        "window",
        F.col("target.aggregate").alias("aggregate"),
        F.col("target.key").alias("key"),
        F.when(page, F.col("namespace")).alias("namespace"),
        F.when(page, F.col("title")).alias("title"),
    ).agg(
        _counted(edit).alias("edits"),
        _counted(F.col("is_new")).alias("new_pages"),
        _counted(edit & F.col("bot")).alias("bot_edits"),
        _counted(edit & F.col("is_anonymous")).alias("anonymous_edits"),
        _summed(edit & (delta > 0), delta).alias("bytes_added"),
        _summed(edit & (delta < 0), -delta).alias("bytes_removed"),
        F.count(F.lit(1)).alias("events"),
        F.max(F.when(page, F.col("server_name"))).alias("server_name"),
        # collect_set skips nulls: the other aggregates' rows keep empty sets in their state.
        F.array_sort(F.collect_set(F.when(page, F.col("user")))).alias("editor_names"),
        F.array_sort(F.collect_set(F.when(page & F.col("bot"), F.col("user")))).alias("bot_names"),
    )


def user_edit_counts(aggregated: DataFrame) -> DataFrame:
    """The ``user_edit_counts`` rows of :func:`aggregate`: the table's columns."""
    return aggregated.where(F.col("aggregate") == USER_EDIT_COUNTS).select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        F.col("key").alias("user_name"),
        F.col("edits").alias("edit_count"),
    )


def wiki_activity(aggregated: DataFrame) -> DataFrame:
    """The ``wiki_activity`` rows of :func:`aggregate`: the table's columns."""
    return aggregated.where(F.col("aggregate") == WIKI_ACTIVITY).select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        F.col("key").alias("wiki"),
        *AGGREGATE_COLUMNS,
    )


def page_activity(aggregated: DataFrame) -> DataFrame:
    """The ``page_activity`` rows of :func:`aggregate`: the table's columns."""
    return aggregated.where(F.col("aggregate") == PAGE_ACTIVITY).select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        F.col("key").alias("wiki"),
        "namespace",
        "title",
        "server_name",
        "edits",
        F.size("editor_names").alias("editors"),
        "bot_edits",
        "anonymous_edits",
        "bytes_added",
        "bytes_removed",
        (F.col("new_pages") > 0).alias("new_page"),
        "editor_names",
        "bot_names",
    )


def sink_rows(aggregated: DataFrame) -> DataFrame:
    """:func:`aggregate`'s rows as the sink reads them: window bounds as epoch microseconds
    (collected timestamps would become naive local times in Python), then the key, the
    counters and the page's columns. Every table in one DataFrame, so a micro-batch is computed
    once."""
    return aggregated.select(
        "aggregate",
        F.unix_micros(F.col("window.start")).alias("window_start_us"),
        F.unix_micros(F.col("window.end")).alias("window_end_us"),
        "key",
        *AGGREGATE_COLUMNS,
        *PAGE_COLUMNS,
    )
