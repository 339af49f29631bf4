"""pipeline_batches.unknown_schema_rows: typed records of a schema version the job does not read

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

The Spark job aggregates only records whose ``schema``/``schema-version`` headers name the
contract it reads; the others are counted per micro-batch (from the batch's progress report,
like the other progress columns: NULL until it arrives, and for batches written before this
revision).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "pipeline_batches", sa.Column("unknown_schema_rows", sa.BigInteger(), nullable=True)
    )
    op.create_check_constraint(
        "pipeline_batches_unknown_schema_rows_nonnegative",
        "pipeline_batches",
        "unknown_schema_rows IS NULL OR unknown_schema_rows >= 0",
    )


def downgrade() -> None:
    op.drop_constraint(
        "pipeline_batches_unknown_schema_rows_nonnegative", "pipeline_batches", type_="check"
    )
    op.drop_column("pipeline_batches", "unknown_schema_rows")
