"""Publish after commit (DESIGN section 4, invariant 4).

A row whose `publish_due_at` is set still owes the stream a message for its current
generation. Whoever committed the change publishes straight away; the relay publishes
whatever is still due after a short grace (a crash between commit and publish, a broker
outage, a retry whose backoff has run out).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, func, select, update

from core.broker import Published, TaskMessage
from core.priority import subject_for
from db.engine import Database
from db.models import Task, TaskStatus, utcnow

# How long the relay leaves a fresh row to the process that committed it.
PUBLISH_GRACE = timedelta(seconds=3)

_record_stmt = (
    update(Task.__table__)
    .where(
        Task.__table__.c.id == bindparam("b_id"),
        Task.__table__.c.generation == bindparam("b_generation"),
        Task.__table__.c.status == TaskStatus.QUEUED,
    )
    .values(
        published_generation=bindparam("b_generation"),
        stream_seq=bindparam("b_seq"),
        publish_due_at=None,
    )
)


def record_published(db: Database, results: list) -> int:
    """Remember which generation each row had published and at which stream sequence.

    Guarded by generation and status: a row that moved on meanwhile keeps its own state.
    """
    rows = [
        {"b_id": r.message.task_id, "b_generation": r.message.generation, "b_seq": r.stream_seq}
        for r in results
        if isinstance(r, Published)
    ]
    if rows:
        with db.session(write=True) as session:
            session.connection().execute(_record_stmt, rows)
    return len(rows)


def due_messages(db: Database, limit: int = 1000) -> list[TaskMessage]:
    now = utcnow()
    with db.session() as session:
        rows = session.execute(
            select(Task.id, Task.generation, Task.category, Task.phase, Task.bucket)
            .where(Task.publish_due_at <= now, Task.status == TaskStatus.QUEUED)
            .order_by(Task.publish_due_at)
            .limit(limit)
        ).all()
    return [TaskMessage(r.id, r.generation, subject_for(r.category, r.phase, r.bucket)) for r in rows]


def relay_backlog(db: Database) -> int:
    """Rows that owe the stream a message and are past their due time."""
    with db.session() as session:
        return session.scalar(
            select(func.count())
            .select_from(Task)
            .where(Task.publish_due_at <= utcnow(), Task.status == TaskStatus.QUEUED)
        )
