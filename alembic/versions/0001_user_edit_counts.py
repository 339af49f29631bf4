"""user_edit_counts and the seed's views recent_user_activity, top_contributors_hourly

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Window bounds are TIMESTAMPTZ: instants, stored in UTC, shown in the session's time zone.
    op.create_table(
        "user_edit_counts",
        sa.Column("window_start", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("window_end", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("edit_count", sa.BigInteger(), nullable=False),
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
        sa.PrimaryKeyConstraint("window_start", "user_name", name="user_edit_counts_pkey"),
        sa.CheckConstraint("edit_count >= 0", name="user_edit_counts_edit_count_nonnegative"),
        sa.CheckConstraint("window_end > window_start", name="user_edit_counts_window_order"),
    )
    op.create_index(
        "ix_user_edit_counts_window_start",
        "user_edit_counts",
        [sa.text("window_start DESC")],
    )
    op.create_index("ix_user_edit_counts_user_name", "user_edit_counts", ["user_name"])

    op.execute(
        """
        CREATE VIEW recent_user_activity AS
        SELECT window_start, window_end, user_name, edit_count
        FROM user_edit_counts
        WHERE window_start >= now() - INTERVAL '24 hours'
        """
    )
    op.execute(
        """
        CREATE VIEW top_contributors_hourly AS
        SELECT user_name,
               SUM(edit_count)::BIGINT AS total_edits,
               COUNT(*)::BIGINT AS active_windows,
               MAX(window_end) AS last_active
        FROM user_edit_counts
        WHERE window_start >= now() - INTERVAL '1 hour'
        GROUP BY user_name
        ORDER BY total_edits DESC, user_name
        LIMIT 50
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS top_contributors_hourly")
    op.execute("DROP VIEW IF EXISTS recent_user_activity")
    op.drop_index("ix_user_edit_counts_user_name", table_name="user_edit_counts")
    op.drop_index("ix_user_edit_counts_window_start", table_name="user_edit_counts")
    op.drop_table("user_edit_counts")
