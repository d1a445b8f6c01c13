"""Robust edges: why a worker died, when a browser session was last seen, counted refusals.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

- workers.exit_error: the error a worker died of (the overview shows it);
- web_sessions.last_seen_at (idle timeout) and an index on created_at (absolute lifetime, pruning);
- audit_log.count: refusals of anonymous and invalid credentials are one row per address per
  minute, with how many there were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("exit_error", sa.Text(), nullable=True))
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_web_sessions_created_at"), ["created_at"], unique=False)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("count", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("count")
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_created_at"))
        batch_op.drop_column("last_seen_at")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("exit_error")
