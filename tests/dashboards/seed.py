"""Known rows for the dashboard's tests, and the clock they are read at.

The clock is NOW = 2026-06-20 12:30:20 UTC, so the live ranges end at 12:31 (after the running
minute): "1h" is [11:31, 12:31), its previous period [10:31, 11:31); the last complete minute is
[12:29, 12:30), the one before it [12:28, 12:29).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
from psycopg2.extras import execute_values

from app.config import Settings
from app.config.clients import libpq_params

NOW = datetime(2026, 6, 20, 12, 30, 20, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

HOSTILE = "O'Brien %_\u200b"  # a quote, LIKE's wildcards, a zero-width space
RTL = "\u200fمستخدم"  # a right-to-left mark, then Arabic


def at(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=UTC)


#: (window_start, user_name, edit_count)
USER_EDITS: list[tuple[datetime, str, int]] = [
    (at(20, 12, 29), "Alice", 6),
    (at(20, 12, 29), "BobBot", 4),
    (at(20, 12, 28), "Alice", 2),
    (at(20, 12, 28), HOSTILE, 3),
    (at(20, 12, 10), RTL, 2),
    (at(20, 12, 0), "Zoë", 1),
    (at(20, 12, 0), "BobBot", 5),
    (at(20, 11, 0), "Carol", 9),  # the previous hour
    (at(19, 9, 0), "Carol", 20),  # yesterday: in 7 days, not in 24 hours
    (at(15, 12, 0), "Dave", 7),  # the oldest window
]

#: (window_start, wiki, edits, new_pages, bot_edits, anonymous_edits, bytes_added,
#:  bytes_removed, events)
WIKI_ACTIVITY: list[tuple[datetime, str, int, int, int, int, int, int, int]] = [
    (at(20, 12, 29), "enwiki", 10, 1, 4, 2, 500, 100, 15),
    (at(20, 12, 29), "dewiki", 5, 0, 1, 1, 50, 20, 6),
    (at(20, 12, 28), "enwiki", 8, 0, 2, 1, 300, 0, 9),
    (at(20, 12, 10), "arwiki", 3, 0, 0, 1, 40, 5, 4),
    (at(20, 12, 0), "frwiki", 6, 1, 5, 0, 1000, 0, 7),
    (at(20, 11, 0), "enwiki", 12, 0, 3, 0, 100, 0, 12),
    (at(19, 9, 0), "enwiki", 20, 2, 10, 5, 2000, 0, 25),
    (at(15, 12, 0), "dewiki", 7, 0, 0, 0, 70, 0, 7),
]

#: (batch_id, committed_at, duration_ms, input_rows, rows_dropped_by_watermark,
#: unknown_schema_rows)
BATCHES: list[tuple[int, datetime, int, int, int, int | None]] = [
    (3, at(19, 9, 1), 2000, 500, 5, 9),
    (40, datetime(2026, 6, 20, 12, 29, 20, tzinfo=UTC), 700, 90, 1, 4),
    (41, datetime(2026, 6, 20, 12, 29, 50, tzinfo=UTC), 850, 120, 2, None),
]


#: (window_start, wiki, namespace, title, server_name, edits, bot_edits, editor_names,
#: bot_names). The newest minute ends at 12:30, so trending's 15 minutes are [12:15, 12:30).
PAGE_ACTIVITY: list[tuple[datetime, str, int, str, str, int, int, list[str], list[str]]] = [
    # Four people, 7 edits, nothing before: 4 × 8 / 1 = 32.
    (at(20, 12, 26), "frwiki", 0, "Mont Blanc", "fr.wikipedia.org", 2, 0, ["Amélie", "Bruno"], []),
    (at(20, 12, 28), "frwiki", 0, "Mont Blanc", "fr.wikipedia.org", 3, 0, ["Bruno", "Chloé"], []),
    (at(20, 12, 29), "frwiki", 0, "Mont Blanc", "fr.wikipedia.org", 2, 0, ["Denis"], []),
    # Three people, 3 edits; 5 edits the day before (the first minute of page_activity, so the
    # past known is 23 h 15 min before the horizon): 3 × 4 / (1 + 5 × 15 / 1395).
    (at(19, 13, 0), "enwiki", 1, "Talk:Tea", "en.wikipedia.org", 5, 0, ["Ann", "Ben", "Cy"], []),
    (at(20, 12, 29), "enwiki", 1, "Talk:Tea", "en.wikipedia.org", 3, 0, ["Ann", "Ben", "Cy"], []),
    # Bots only: not trending.
    (at(20, 12, 29), "dewiki", 0, "Zugspitze", "de.wikipedia.org", 9, 9,
     ["A-Bot", "B-Bot", "C-Bot"], ["A-Bot", "B-Bot", "C-Bot"]),
    # Two people: not trending.
    (at(20, 12, 20), "arwiki", 0, "القاهرة", "ar.wikipedia.org", 4, 0, ["Hana", "Omar"], []),
]  # fmt: skip


#: (kind, wiki, namespace, title, server_name, window_start, window_end, observed, expected,
#: score, open)
AlertRow = tuple[
    str, str, int | None, str | None, str | None, datetime, datetime, float, float, float, bool
]
ALERTS: list[AlertRow] = [
    # Mont Blanc trending now (PAGE_ACTIVITY's): open.
    ("page_trending", "frwiki", 0, "Mont Blanc", "fr.wikipedia.org", at(20, 12, 26),
     at(20, 12, 30), 7, 0, 32, True),
    # enwiki surged from 12:05 to 12:08: in the last hour.
    ("wiki_surge", "enwiki", None, None, None, at(20, 12, 5), at(20, 12, 8), 40, 8, 11.3, False),
    # dewiki went quiet yesterday: in 7 days, not in the last hour.
    ("wiki_drop", "dewiki", None, None, None, at(19, 9, 0), at(19, 9, 5), 0, 41, 6.4, False),
]  # fmt: skip


def insert(
    settings: Settings,
    *,
    users: list[tuple[datetime, str, int]] = USER_EDITS,
    wikis: list[tuple[datetime, str, int, int, int, int, int, int, int]] = WIKI_ACTIVITY,
    batches: list[tuple[int, datetime, int, int, int, int | None]] = BATCHES,
    pages: list[tuple[datetime, str, int, str, str, int, int, list[str], list[str]]] = (
        PAGE_ACTIVITY
    ),
    alerts: list[AlertRow] = ALERTS,
) -> None:
    connection = psycopg2.connect(**libpq_params(settings.postgres))
    try:
        with connection, connection.cursor() as cursor:
            execute_values(
                cursor,
                "INSERT INTO user_edit_counts (window_start, window_end, user_name, edit_count) "
                "VALUES %s",
                [(start, start + MINUTE, name, count) for start, name, count in users],
            )
            execute_values(
                cursor,
                "INSERT INTO wiki_activity (window_start, window_end, wiki, edits, new_pages, "
                "bot_edits, anonymous_edits, bytes_added, bytes_removed, events) VALUES %s",
                [(start, start + MINUTE, *rest) for start, *rest in wikis],
            )
            execute_values(
                cursor,
                "INSERT INTO page_activity (window_start, window_end, wiki, namespace, title, "
                "server_name, edits, editors, bot_edits, anonymous_edits, bytes_added, "
                "bytes_removed, new_page, editor_names, bot_names) VALUES %s",
                [
                    (start, start + MINUTE, wiki, namespace, title, server, edits, len(names),
                     bot_edits, 0, 0, 0, False, names, bots)
                    for start, wiki, namespace, title, server, edits, bot_edits, names, bots
                    in pages
                ],
            )  # fmt: skip
            for kind, wiki, namespace, title, server, start, end, *values, is_open in alerts:
                cursor.execute(
                    "INSERT INTO alerts (kind, wiki, namespace, title, server_name, window_start, "
                    "window_end, detected_window_end, observed, expected, score, closed_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "CASE WHEN %s THEN NULL ELSE %s END)",
                    (kind, wiki, namespace, title, server, start, end, start + MINUTE, *values,
                     is_open, end),
                )  # fmt: skip
            execute_values(
                cursor,
                "INSERT INTO pipeline_batches (query_name, batch_id, committed_at, "
                "user_edit_counts_rows, wiki_activity_rows, started_at, duration_ms, input_rows, "
                "rows_dropped_by_watermark, max_event_time, watermark, unknown_schema_rows) "
                "VALUES %s",
                [
                    ("wikipulse_aggregates", batch, committed, 10, 5, committed, duration,
                     inputs, dropped, committed, committed - 2 * MINUTE, unknown)
                    for batch, committed, duration, inputs, dropped, unknown in batches
                ],
            )  # fmt: skip
    finally:
        connection.close()
