"""a stopping job's cause replaces the stop_requested and preempting flags

Revision ID: 3c1f0a7e5b21
Revises: 90d9c4db41d7
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3c1f0a7e5b21"
down_revision: str | None = "90d9c4db41d7"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stop_cause", sa.String(length=16), nullable=True))
    # a stop asked for wins over a preemption, as the reconciler decided before
    op.execute(
        "UPDATE jobs SET stop_cause = CASE"
        " WHEN stop_requested THEN 'requested'"
        " WHEN preempting THEN 'preempted'"
        " ELSE 'task-failed' END,"
        " state = 'stopping'"
        " WHERE state IN ('running', 'stopping')"
        " AND (stop_requested OR preempting OR state = 'stopping')"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stop_requested")
        batch.drop_column("preempting")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("stop_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("preempting", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE jobs SET stop_requested = TRUE WHERE stop_cause = 'requested'")
    op.execute(
        "UPDATE jobs SET preempting = TRUE, state = 'running'"
        " WHERE stop_cause IN ('preempted', 'requeued')"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stop_cause")
