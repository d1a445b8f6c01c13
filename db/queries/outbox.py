"""The outbox: rows whose current generation still owes the stream a message (publish_due_at
set), and the record of what was published."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Integer, String, Table, bindparam, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db import dialect
from db.models import Task, TaskStatus

_tasks = cast(Table, Task.__table__)

# Guarded by generation and status: a row that moved on meanwhile keeps its own state.
_RECORD_PUBLISHED = (
    update(_tasks)
    .where(
        _tasks.c.id == bindparam("b_id"),
        _tasks.c.generation == bindparam("b_generation"),
        _tasks.c.status == TaskStatus.QUEUED,
    )
    .values(published_generation=bindparam("b_generation"), stream_seq=bindparam("b_seq"), publish_due_at=None)
)
# The same for many rows in one statement (PostgreSQL): unnest(ids, generations, stream_seqs).
_PUBLISHED_ROWS = dialect.array_rows("published", id=String, generation=Integer, seq=BigInteger)
_RECORD_MANY_PUBLISHED = (
    update(_tasks)
    .where(
        _tasks.c.id == _PUBLISHED_ROWS.c.id,
        _tasks.c.generation == _PUBLISHED_ROWS.c.generation,
        _tasks.c.status == TaskStatus.QUEUED,
    )
    .values(published_generation=_PUBLISHED_ROWS.c.generation, stream_seq=_PUBLISHED_ROWS.c.seq, publish_due_at=None)
)


def record_published(connection: Connection, published: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """(task_id, generation, stream_seq) for each message the stream stored. Returns those whose
    row had moved on meanwhile (cancelled, requeued, claimed): their message is stale."""
    if not published:
        return []
    if len(published) > 1 and dialect.updates_from_arrays(connection):
        params = dialect.array_params(_PUBLISHED_ROWS, published)
        recorded = connection.execute(_RECORD_MANY_PUBLISHED, params).rowcount
    else:
        rows = [{"b_id": i, "b_generation": g, "b_seq": seq} for i, g, seq in published]
        recorded = connection.execute(_RECORD_PUBLISHED, rows).rowcount
    if recorded == len(published):
        return []
    current = {
        (row.id, row.published_generation, row.stream_seq)
        for row in connection.execute(
            select(Task.id, Task.published_generation, Task.stream_seq).where(Task.id.in_([i for i, _, _ in published]))
        )
    }
    return [message for message in published if message not in current]


def due_rows(session: Session, now: datetime, limit: int) -> list[Any]:
    """Rows whose message is due: (id, generation, category, phase, bucket), the oldest first."""
    return list(
        session.execute(
            select(Task.id, Task.generation, Task.category, Task.phase, Task.bucket)
            .where(Task.publish_due_at <= now, Task.status == TaskStatus.QUEUED)
            .order_by(Task.publish_due_at)
            .limit(limit)
        ).all()
    )


def backlog(session: Session, now: datetime) -> int:
    """Rows that owe the stream a message and are past their due time."""
    return int(
        session.scalar(
            select(func.count()).select_from(Task).where(Task.publish_due_at <= now, Task.status == TaskStatus.QUEUED)
        )
        or 0
    )
