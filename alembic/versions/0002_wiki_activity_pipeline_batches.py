"""wiki_activity (per wiki per window) and pipeline_batches (one row per Spark micro-batch)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("edits", "new_pages", "bot_edits", "anonymous_edits", "bytes_added", "bytes_removed")


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column(
            "updated_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
    ]


def upgrade() -> None:
    # Written by the Spark job with INSERT ... ON CONFLICT (window_start, wiki) DO UPDATE.
    op.create_table(
        "wiki_activity",
        sa.Column("window_start", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("window_end", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("wiki", sa.Text(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTERS),
        sa.Column("events", sa.BigInteger(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("window_start", "wiki", name="wiki_activity_pkey"),
        sa.CheckConstraint("window_end > window_start", name="wiki_activity_window_order"),
        sa.CheckConstraint(
            " AND ".join(f"{name} >= 0" for name in COUNTERS),
            name="wiki_activity_counts_nonnegative",
        ),
        sa.CheckConstraint(
            "edits <= events AND new_pages <= edits AND bot_edits <= edits "
            "AND anonymous_edits <= edits",
            name="wiki_activity_counts_consistent",
        ),
    )
    # The primary key serves time ranges (window_start first); this one serves one wiki's history.
    op.create_index(
        "ix_wiki_activity_wiki_window_start",
        "wiki_activity",
        ["wiki", sa.text("window_start DESC")],
    )

    # One row per committed micro-batch of a streaming query. The sink writes the first columns in
    # the transaction that writes the batch's aggregates (so a replayed batch upserts its own
    # row); the query's progress report fills in the rest right after Spark commits the batch.
    op.create_table(
        "pipeline_batches",
        sa.Column("query_name", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "committed_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("user_edit_counts_rows", sa.BigInteger(), nullable=False),
        sa.Column("wiki_activity_rows", sa.BigInteger(), nullable=False),
        sa.Column(
            "rows_written",
            sa.BigInteger(),
            sa.Computed("user_edit_counts_rows + wiki_activity_rows", persisted=True),
            nullable=False,
        ),
        # From the query's progress report (NULL until it arrives).
        sa.Column("started_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("input_rows", sa.BigInteger(), nullable=True),
        sa.Column("rows_dropped_by_watermark", sa.BigInteger(), nullable=True),
        sa.Column("max_event_time", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("watermark", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("query_name", "batch_id", name="pipeline_batches_pkey"),
        sa.CheckConstraint(
            "batch_id >= 0 AND user_edit_counts_rows >= 0 AND wiki_activity_rows >= 0 "
            "AND (duration_ms IS NULL OR duration_ms >= 0) "
            "AND (input_rows IS NULL OR input_rows >= 0) "
            "AND (rows_dropped_by_watermark IS NULL OR rows_dropped_by_watermark >= 0)",
            name="pipeline_batches_counts_nonnegative",
        ),
    )
    op.create_index(
        "ix_pipeline_batches_committed_at",
        "pipeline_batches",
        [sa.text("committed_at DESC")],
    )


def downgrade() -> None:
    op.drop_index("ix_pipeline_batches_committed_at", table_name="pipeline_batches")
    op.drop_table("pipeline_batches")
    op.drop_index("ix_wiki_activity_wiki_window_start", table_name="wiki_activity")
    op.drop_table("wiki_activity")
