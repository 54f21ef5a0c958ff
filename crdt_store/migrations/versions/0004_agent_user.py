"""Agents: the user an execution runs for (``user_id`` of ``agent_execution_start``), and the
id of the event that started it (events before it belong to earlier executions).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("agents", sa.Column("user_id", sa.String(255), nullable=True))
    op.add_column("agents", sa.Column("start_event_id", BigId, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("start_event_id")
        batch.drop_column("user_id")
