"""page_activity (per page per window) and its hourly rollup; pipeline_batches.page_activity_rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

``page_activity``: one row per (window, wiki, namespace, title) with an edit, written by the
Spark job's upserts like the other aggregates. Its named editors are kept (``editor_names``,
sorted; ``bot_names``: those of them with the bot flag), so that the distinct editors of a page
over several minutes are exact, bots or not (what trending counts); ``editors`` is their
number. It is kept for ``postgres.page_activity_retention``
(48 hours by default, spark/retention.py).

``page_activity_hourly``: the same counters summed per hour, kept for ``postgres.retention_days``
like the other rollups. A statement-level trigger adds what an INSERT or UPDATE of
``page_activity`` changes (an update adds its difference, so a replayed batch that changes
nothing adds nothing). A DELETE takes nothing away: the retention's deletes of old minutes must
leave their hours. Distinct editors cannot be summed over minutes, so the hours have none.

``pipeline_batches.page_activity_rows``: the page rows a batch wrote; ``rows_written`` counts
them too.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("edits", "bot_edits", "anonymous_edits", "bytes_added", "bytes_removed")

PAGE_ACTIVITY_HOURLY_ADD = r"""
CREATE FUNCTION page_activity_hourly_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO page_activity_hourly AS h
            (hour, wiki, namespace, title, server_name, edits, bot_edits, anonymous_edits,
             bytes_added, bytes_removed, new_pages)
        SELECT date_trunc('hour', n.window_start, 'UTC'), n.wiki, n.namespace, n.title,
               max(n.server_name), sum(n.edits), sum(n.bot_edits), sum(n.anonymous_edits),
               sum(n.bytes_added), sum(n.bytes_removed), count(*) FILTER (WHERE n.new_page)
        FROM new_rows AS n
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (hour, wiki, namespace, title) DO UPDATE SET
            server_name = EXCLUDED.server_name,
            edits = h.edits + EXCLUDED.edits,
            bot_edits = h.bot_edits + EXCLUDED.bot_edits,
            anonymous_edits = h.anonymous_edits + EXCLUDED.anonymous_edits,
            bytes_added = h.bytes_added + EXCLUDED.bytes_added,
            bytes_removed = h.bytes_removed + EXCLUDED.bytes_removed,
            new_pages = h.new_pages + EXCLUDED.new_pages,
            updated_at = now();
    ELSE  -- UPDATE: add the difference; rows whose counters did not change add nothing
        INSERT INTO page_activity_hourly AS h
            (hour, wiki, namespace, title, server_name, edits, bot_edits, anonymous_edits,
             bytes_added, bytes_removed, new_pages)
        SELECT date_trunc('hour', n.window_start, 'UTC'), n.wiki, n.namespace, n.title,
               max(n.server_name), sum(n.edits - o.edits), sum(n.bot_edits - o.bot_edits),
               sum(n.anonymous_edits - o.anonymous_edits), sum(n.bytes_added - o.bytes_added),
               sum(n.bytes_removed - o.bytes_removed),
               count(*) FILTER (WHERE n.new_page) - count(*) FILTER (WHERE o.new_page)
        FROM new_rows AS n
        JOIN old_rows AS o USING (window_start, wiki, namespace, title)
        WHERE (n.edits, n.bot_edits, n.anonymous_edits, n.bytes_added, n.bytes_removed,
               n.new_page)
              IS DISTINCT FROM
              (o.edits, o.bot_edits, o.anonymous_edits, o.bytes_added, o.bytes_removed,
               o.new_page)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (hour, wiki, namespace, title) DO UPDATE SET
            server_name = EXCLUDED.server_name,
            edits = h.edits + EXCLUDED.edits,
            bot_edits = h.bot_edits + EXCLUDED.bot_edits,
            anonymous_edits = h.anonymous_edits + EXCLUDED.anonymous_edits,
            bytes_added = h.bytes_added + EXCLUDED.bytes_added,
            bytes_removed = h.bytes_removed + EXCLUDED.bytes_removed,
            new_pages = h.new_pages + EXCLUDED.new_pages,
            updated_at = now();
    END IF;
    RETURN NULL;
END;
$$
"""


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            name, sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.text("now()")
        )
        for name in ("created_at", "updated_at")
    ]


def upgrade() -> None:
    op.create_table(
        "page_activity",
        sa.Column("window_start", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("window_end", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("wiki", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("server_name", sa.Text(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTERS),
        sa.Column("editors", sa.Integer(), nullable=False),
        sa.Column("new_page", sa.Boolean(), nullable=False),
        sa.Column("editor_names", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("bot_names", sa.ARRAY(sa.Text()), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint(
            "window_start", "wiki", "namespace", "title", name="page_activity_pkey"
        ),
        sa.CheckConstraint("window_end > window_start", name="page_activity_window_order"),
        sa.CheckConstraint(
            " AND ".join(f"{name} >= 0" for name in COUNTERS) + " AND edits > 0",
            name="page_activity_counts_nonnegative",
        ),
        sa.CheckConstraint(
            "bot_edits <= edits AND anonymous_edits <= edits AND editors <= edits "
            "AND editors = cardinality(editor_names) AND bot_names <@ editor_names",
            name="page_activity_counts_consistent",
        ),
    )
    # The primary key serves time ranges (trending reads the last minutes of every page); this
    # one serves one page's history (its sparkline).
    op.create_index(
        "ix_page_activity_page_window_start",
        "page_activity",
        ["wiki", "namespace", "title", sa.text("window_start DESC")],
    )

    op.create_table(
        "page_activity_hourly",
        sa.Column("hour", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("wiki", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("server_name", sa.Text(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTERS),
        sa.Column("new_pages", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint(
            "hour", "wiki", "namespace", "title", name="page_activity_hourly_pkey"
        ),
    )
    op.create_index(
        "ix_page_activity_hourly_page_hour",
        "page_activity_hourly",
        ["wiki", "namespace", "title", sa.text("hour DESC")],
    )
    op.execute(PAGE_ACTIVITY_HOURLY_ADD)
    op.execute(
        "CREATE TRIGGER page_activity_hourly_insert AFTER INSERT ON page_activity "
        "REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION page_activity_hourly_add()"
    )
    op.execute(
        "CREATE TRIGGER page_activity_hourly_update AFTER UPDATE ON page_activity "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION page_activity_hourly_add()"
    )

    op.add_column(
        "pipeline_batches",
        sa.Column("page_activity_rows", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_check_constraint(
        "pipeline_batches_page_activity_rows_nonnegative",
        "pipeline_batches",
        "page_activity_rows >= 0",
    )
    # A generated column's expression cannot be altered: it is made again, counting the pages.
    op.drop_column("pipeline_batches", "rows_written")
    op.add_column(
        "pipeline_batches",
        sa.Column(
            "rows_written",
            sa.BigInteger(),
            sa.Computed(
                "user_edit_counts_rows + wiki_activity_rows + page_activity_rows", persisted=True
            ),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("pipeline_batches", "rows_written")
    op.add_column(
        "pipeline_batches",
        sa.Column(
            "rows_written",
            sa.BigInteger(),
            sa.Computed("user_edit_counts_rows + wiki_activity_rows", persisted=True),
            nullable=False,
        ),
    )
    op.drop_constraint(
        "pipeline_batches_page_activity_rows_nonnegative", "pipeline_batches", type_="check"
    )
    op.drop_column("pipeline_batches", "page_activity_rows")
    op.execute("DROP TRIGGER page_activity_hourly_update ON page_activity")
    op.execute("DROP TRIGGER page_activity_hourly_insert ON page_activity")
    op.execute("DROP FUNCTION page_activity_hourly_add()")
    op.drop_index("ix_page_activity_hourly_page_hour", table_name="page_activity_hourly")
    op.drop_table("page_activity_hourly")
    op.drop_index("ix_page_activity_page_window_start", table_name="page_activity")
    op.drop_table("page_activity")
