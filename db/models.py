"""SQLAlchemy 2 models. The tasks row is the truth about a task; NATS only carries wake-ups."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    event,
    literal,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (SQLite has no time zones) and always hands back aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TaskStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    ALL = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
    FINAL = (SUCCEEDED, FAILED, CANCELLED)


def _where(condition: str) -> dict[str, Any]:
    """A partial index's condition, for both SQLite and PostgreSQL."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


def status_is(status: str) -> ColumnElement[bool]:
    """`tasks.status = '<status>'` with the value written into the SQL: a partial index on
    that condition is only used when the planner can see the value (not a bound parameter)."""
    return Task.__table__.c.status == literal(status, literal_execute=True)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(32))
    phase: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(SmallInteger)
    bucket: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    # Requeue bookkeeping (docs/architecture.md, "The invariants"): every requeue bumps generation; the message
    # for generation G carries Nats-Msg-Id "{id}:{G}". publish_due_at is the outbox marker:
    # set while the current generation still has to be published, cleared once it is.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    published_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stream_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    publish_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # The Tasks page's orders (db/queries.py): a sort key, then created_at, then id.
        Index("ix_tasks_status_created_at", "status", "created_at", "id"),
        Index("ix_tasks_created_at", "created_at", "id"),
        Index("ix_tasks_name", "name", "created_at", "id"),
        Index("ix_tasks_priority_created_at", "priority", "created_at", "id"),
        Index("ix_tasks_status_priority_created_at", "status", "priority", "created_at", "id"),
        Index("ix_tasks_category_phase_created_at", "category", "phase", "created_at", "id"),
        # Partial indexes for the engine's loops: small, and a worker's claim or finish touches
        # only the few entries that change (each index entry written costs every write).
        Index("ix_tasks_queued", "category", "phase", "bucket", "queued_at", **_where("status = 'queued'")),
        Index("ix_tasks_running_lease", "lease_expires_at", **_where("status = 'running'")),
        Index("ix_tasks_publish_due_at", "publish_due_at", **_where("publish_due_at IS NOT NULL")),
        Index("ix_tasks_correlation_id", "correlation_id"),
        Index("ix_tasks_finished_at", "finished_at", "status"),  # the overview's throughput, index only
    )


class PriorityHistory(Base):
    __tablename__ = "priority_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    from_priority: Mapped[int] = mapped_column(SmallInteger)
    to_priority: Mapped[int] = mapped_column(SmallInteger)
    from_bucket: Mapped[str] = mapped_column(String(8))
    to_bucket: Mapped[str] = mapped_column(String(8))
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(64))
    # Copied from the task when the row is written, so the history charts need no join with
    # tasks: category and phase never change, and queued_at gives the wait before the upgrade
    # (a later retry resets the task's own queued_at). NULL only in rows written by hand.
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    phase: Mapped[str | None] = mapped_column(String(32), nullable=True)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the task first started after this change. Filled by the trigger below when the
    # task's started_at is set, so no reader joins 100,000s of history rows with tasks, and no
    # writer has to know about history.
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The waits before and after the change in seconds (changed_at - queued_at, started_at -
    # changed_at), kept as numbers: on SQLite, parsing the timestamps cost more than the chart.
    wait_before_s: Mapped[float | None] = mapped_column(Double, nullable=True)
    wait_after_s: Mapped[float | None] = mapped_column(Double, nullable=True)

    __table_args__ = (
        # One per chart of the history page, each covering its GROUP BY (core/history.py).
        Index("ix_priority_history_changed_at", "changed_at", "action"),
        Index("ix_priority_history_changed_by", "changed_by", "action", "changed_at"),
        Index("ix_priority_history_category", "category", "phase", "changed_at"),
        Index("ix_priority_history_waits", "action", "wait_before_s", "wait_after_s"),
        # SQLite groups by sorting: these hand the chart per hour / per day its buckets in order
        # (the expressions are core.history's, character for character). PostgreSQL hashes.
        Index("ix_priority_history_hour", text("substr(changed_at, 1, 13)"), "action", "changed_at").ddl_if(
            dialect="sqlite"
        ),
        Index("ix_priority_history_day", text("substr(changed_at, 1, 10)"), "action", "changed_at").ddl_if(
            dialect="sqlite"
        ),
    )


# tasks.started_at set (a worker's claim) -> the task's history rows that have no start yet get
# it. An upgrade only happens while a task is queued, so that start is the first one after it.
def _history_started(seconds_after: str) -> str:
    return (
        f"UPDATE priority_history SET started_at = NEW.started_at, wait_after_s = {seconds_after} "
        "WHERE task_id = NEW.id AND started_at IS NULL;"
    )


event.listen(
    Task.__table__,
    "after_create",
    DDL(
        "CREATE TRIGGER tr_tasks_started_history AFTER UPDATE OF started_at ON tasks "
        "FOR EACH ROW WHEN NEW.started_at IS NOT NULL BEGIN "
        + _history_started("(julianday(NEW.started_at) - julianday(changed_at)) * 86400.0")
        + " END"
    ).execute_if(dialect="sqlite"),
)
event.listen(
    Task.__table__,
    "after_create",
    DDL(
        "CREATE OR REPLACE FUNCTION switchyard_history_started() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        + _history_started("extract(epoch FROM NEW.started_at - changed_at)")
        + " RETURN NULL; END $$"
    ).execute_if(dialect="postgresql"),
)
event.listen(
    Task.__table__,
    "after_create",
    DDL(
        "CREATE TRIGGER tr_tasks_started_history AFTER UPDATE OF started_at ON tasks "
        "FOR EACH ROW WHEN (NEW.started_at IS NOT NULL) EXECUTE FUNCTION switchyard_history_started()"
    ).execute_if(dialect="postgresql"),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on password change, role change and disable: sessions carry the version they
    # were issued with, so a bump ends every older session.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How the console shows times to this user: "UTC" or an IANA zone (their browser's).
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")


class WebSession(Base):
    """A signed-in browser. The cookie only names the row, so signing out really ends it."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    session_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The last request it made, written at most once a minute (the idle timeout counts from it).
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApiToken(Base):
    """A user's token for the HTTP API. Only the SHA-256 of the secret is kept: the secret is
    256 random bits, so a fast hash is enough (argon2 is for guessable passwords)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # shown in lists, never secret
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    permission: Mapped[str] = mapped_column(String(32), primary_key=True)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Refusals of anonymous and invalid credentials are one row per address per minute, counted.
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __table_args__ = (
        # Sign-in throttling counts recent failures per account and per address (core/security.py).
        Index("ix_audit_log_sign_in_actor", "action", "actor", "at"),
        Index("ix_audit_log_sign_in_address", "action", "address", "at"),
        Index("ix_audit_log_target", "target", "at"),  # a task's timeline: what people did to it
    )


class WorkerRecord(Base):
    """One row per worker process, refreshed while it runs: the console's 'workers online'."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    buckets: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(Text)
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    tasks_run: Mapped[int] = mapped_column(Integer, default=0)
    # Why it stopped, when it died of an error it did not handle (None: stopped as asked).
    exit_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class TaskAttempt(Base):
    """An attempt of a task that ended without success (failed, or its lease ran out): the task
    row keeps only its current attempt, the timeline shows these. Written in the same fenced
    transaction as the outcome; successes need no row (the task row holds the last attempt)."""

    __tablename__ = "task_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class TaskEffect(Base):
    """What a task did, written in the same transaction as its fenced completion.

    A task that records its effect here has it exactly once, however often it ran.
    """

    __tablename__ = "task_effects"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[Any | None] = mapped_column(JSON, nullable=True)
