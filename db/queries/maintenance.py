"""The reaper's and the reconciler's statements: each change is a compare-and-set per row, so
any number of processes may run them at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.engine import rows_changed
from db.models import Task, TaskAttempt, TaskStatus, status_is


def expired_leases(session: Session, now: datetime, limit: int) -> list[Any]:
    """Running rows whose lease ran out: (id, generation, lease_token, attempts, max_attempts,
    worker_id, started_at)."""
    return list(
        session.execute(
            select(
                Task.id,
                Task.generation,
                Task.lease_token,
                Task.attempts,
                Task.max_attempts,
                Task.worker_id,
                Task.started_at,
            )
            .where(status_is(TaskStatus.RUNNING), Task.lease_expires_at < now)
            .limit(limit)
        ).all()
    )


def take_back_lease(session: Session, task_id: str, generation: int, lease_token: str, values: dict) -> bool:
    """Set `values` on a running row if it still holds this generation and lease."""
    result = session.execute(
        update(Task)
        .where(
            Task.id == task_id,
            Task.generation == generation,
            Task.status == TaskStatus.RUNNING,
            Task.lease_token == lease_token,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(result) == 1


def add_attempt(session: Session, **values: Any) -> None:
    session.add(TaskAttempt(**values))


def published_queued_counts(session: Session) -> list[tuple[str, str, str, int]]:
    """(category, phase, bucket, n): tasks queued with their message in the stream."""
    return [
        (c, p, b, n)
        for c, p, b, n in session.execute(
            select(Task.category, Task.phase, Task.bucket, func.count())
            .where(status_is(TaskStatus.QUEUED), Task.publish_due_at.is_(None), Task.stream_seq.is_not(None))
            .group_by(Task.category, Task.phase, Task.bucket)
        ).all()
    ]


def published_rows(
    session: Session, category: str, phase: str, bucket: str, older_than: datetime, limit: int
) -> list[tuple[str, int, int]]:
    """(id, generation, stream_seq) of queued, published rows on one subject, the oldest first."""
    return [
        (row.id, row.generation, row.stream_seq)
        for row in session.execute(
            select(Task.id, Task.generation, Task.stream_seq)
            .where(
                status_is(TaskStatus.QUEUED),
                Task.category == category,
                Task.phase == phase,
                Task.bucket == bucket,
                Task.publish_due_at.is_(None),
                Task.stream_seq.is_not(None),
                Task.queued_at < older_than,
            )
            .order_by(Task.queued_at)
            .limit(limit)
        ).all()
    ]


def requeue_lost(session: Session, task_id: str, generation: int, stream_seq: int, now: datetime) -> int:
    """A new generation, due now, for a queued row whose message at `stream_seq` is gone."""
    return rows_changed(
        session.execute(
            update(Task)
            .where(
                Task.id == task_id,
                Task.generation == generation,
                Task.status == TaskStatus.QUEUED,
                Task.stream_seq == stream_seq,
            )
            .values(generation=generation + 1, publish_due_at=now)
            .execution_options(synchronize_session=False)
        )
    )
