"""The schema of Switchyard 0.1.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Besides the tables: SQLite-only expression indexes for the history chart's hour and day
buckets, and the trigger that copies a task's start into its history rows (db/models.py).
Times are stored as naive UTC (db.models.UTCDateTime is a DateTime underneath).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index("ix_audit_log_sign_in_actor", ["action", "actor", "at"], unique=False)
        batch_op.create_index("ix_audit_log_sign_in_address", ["action", "address", "at"], unique=False)

    op.create_table(
        "priority_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("from_priority", sa.SmallInteger(), nullable=False),
        sa.Column("to_priority", sa.SmallInteger(), nullable=False),
        sa.Column("from_bucket", sa.String(length=8), nullable=False),
        sa.Column("to_bucket", sa.String(length=8), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("phase", sa.String(length=32), nullable=True),
        sa.Column("queued_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("wait_before_s", sa.Double(), nullable=True),
        sa.Column("wait_after_s", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_priority_history")),
    )
    with op.batch_alter_table("priority_history", schema=None) as batch_op:
        batch_op.create_index("ix_priority_history_category", ["category", "phase", "changed_at"], unique=False)
        batch_op.create_index("ix_priority_history_changed_at", ["changed_at", "action"], unique=False)
        batch_op.create_index("ix_priority_history_changed_by", ["changed_by", "action", "changed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_priority_history_task_id"), ["task_id"], unique=False)
        batch_op.create_index("ix_priority_history_waits", ["action", "wait_before_s", "wait_after_s"], unique=False)

    op.create_table(
        "role_permissions",
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("permission", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("role", "permission", name=op.f("pk_role_permissions")),
    )
    op.create_table(
        "task_effects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_effects")),
    )
    with op.batch_alter_table("task_effects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_effects_task_id"), ["task_id"], unique=False)

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("bucket", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("published_generation", sa.Integer(), nullable=True),
        sa.Column("stream_seq", sa.BigInteger(), nullable=True),
        sa.Column("publish_due_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_category_phase_created_at", ["category", "phase", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_tasks_correlation_id", ["correlation_id"], unique=False)
        batch_op.create_index("ix_tasks_created_at", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_tasks_finished_at", ["finished_at", "status"], unique=False)
        batch_op.create_index("ix_tasks_name", ["name", "created_at", "id"], unique=False)
        batch_op.create_index("ix_tasks_priority_created_at", ["priority", "created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_tasks_publish_due_at",
            ["publish_due_at"],
            unique=False,
            sqlite_where=sa.text("publish_due_at IS NOT NULL"),
            postgresql_where=sa.text("publish_due_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_tasks_queued",
            ["category", "phase", "bucket", "queued_at"],
            unique=False,
            sqlite_where=sa.text("status = 'queued'"),
            postgresql_where=sa.text("status = 'queued'"),
        )
        batch_op.create_index(
            "ix_tasks_running_lease",
            ["lease_expires_at"],
            unique=False,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        )
        batch_op.create_index("ix_tasks_status_created_at", ["status", "created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_tasks_status_priority_created_at", ["status", "priority", "created_at", "id"], unique=False
        )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("hostname", sa.String(length=128), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("buckets", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("tasks_run", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workers_last_seen_at"), ["last_seen_at"], unique=False)

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_tokens_prefix")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    if op.get_bind().dialect.name == "sqlite":
        op.create_index(
            "ix_priority_history_hour",
            "priority_history",
            [sa.text("substr(changed_at, 1, 13)"), "action", "changed_at"],
        )
        op.create_index(
            "ix_priority_history_day",
            "priority_history",
            [sa.text("substr(changed_at, 1, 10)"), "action", "changed_at"],
        )
        op.execute(
            "CREATE TRIGGER tr_tasks_started_history AFTER UPDATE OF started_at ON tasks "
            "FOR EACH ROW WHEN NEW.started_at IS NOT NULL BEGIN "
            "UPDATE priority_history SET started_at = NEW.started_at, "
            "wait_after_s = (julianday(NEW.started_at) - julianday(changed_at)) * 86400.0 "
            "WHERE task_id = NEW.id AND started_at IS NULL; END"
        )
    elif op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION switchyard_history_started() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "UPDATE priority_history SET started_at = NEW.started_at, "
            "wait_after_s = extract(epoch FROM NEW.started_at - changed_at) "
            "WHERE task_id = NEW.id AND started_at IS NULL; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER tr_tasks_started_history AFTER UPDATE OF started_at ON tasks "
            "FOR EACH ROW WHEN (NEW.started_at IS NOT NULL) EXECUTE FUNCTION switchyard_history_started()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tr_tasks_started_history ON tasks")
        op.execute("DROP FUNCTION IF EXISTS switchyard_history_started()")
    else:
        op.execute("DROP TRIGGER IF EXISTS tr_tasks_started_history")
        op.drop_index("ix_priority_history_day", "priority_history")
        op.drop_index("ix_priority_history_hour", "priority_history")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))

    op.drop_table("api_tokens")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workers_last_seen_at"))

    op.drop_table("workers")
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_user_id"))

    op.drop_table("web_sessions")
    op.drop_table("users")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status_priority_created_at")
        batch_op.drop_index("ix_tasks_status_created_at")
        batch_op.drop_index(
            "ix_tasks_running_lease",
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        )
        batch_op.drop_index(
            "ix_tasks_queued", sqlite_where=sa.text("status = 'queued'"), postgresql_where=sa.text("status = 'queued'")
        )
        batch_op.drop_index(
            "ix_tasks_publish_due_at",
            sqlite_where=sa.text("publish_due_at IS NOT NULL"),
            postgresql_where=sa.text("publish_due_at IS NOT NULL"),
        )
        batch_op.drop_index("ix_tasks_priority_created_at")
        batch_op.drop_index("ix_tasks_name")
        batch_op.drop_index("ix_tasks_finished_at")
        batch_op.drop_index("ix_tasks_created_at")
        batch_op.drop_index("ix_tasks_correlation_id")
        batch_op.drop_index("ix_tasks_category_phase_created_at")

    op.drop_table("tasks")
    with op.batch_alter_table("task_effects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_effects_task_id"))

    op.drop_table("task_effects")
    op.drop_table("role_permissions")
    with op.batch_alter_table("priority_history", schema=None) as batch_op:
        batch_op.drop_index("ix_priority_history_waits")
        batch_op.drop_index(batch_op.f("ix_priority_history_task_id"))
        batch_op.drop_index("ix_priority_history_changed_by")
        batch_op.drop_index("ix_priority_history_changed_at")
        batch_op.drop_index("ix_priority_history_category")

    op.drop_table("priority_history")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_sign_in_address")
        batch_op.drop_index("ix_audit_log_sign_in_actor")
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))
        batch_op.drop_index(batch_op.f("ix_audit_log_actor"))

    op.drop_table("audit_log")
