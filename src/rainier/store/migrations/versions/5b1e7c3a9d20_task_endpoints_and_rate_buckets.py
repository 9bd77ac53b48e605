"""task endpoints and shared rate buckets

Revision ID: 5b1e7c3a9d20
Revises: 90d9c4db41d7
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rainier.store.tables

revision: str = "5b1e7c3a9d20"
down_revision: str | None = "90d9c4db41d7"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_endpoints",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column(
            "registered_at", rainier.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "job_id", "attempt", "rank", "purpose", name=op.f("pk_task_endpoints")
        ),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("full_at", sa.Float(), nullable=False),
        sa.Column("admitted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("task_endpoints")
