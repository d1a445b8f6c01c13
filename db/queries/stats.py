"""Counts for the overview: tasks by status, what is queued per cell with the oldest, and tasks
finished per minute."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import dialect
from db.models import Task, TaskStatus, status_is


def count_by_status(session: Session) -> dict[str, int]:
    return {status: n for status, n in session.execute(select(Task.status, func.count()).group_by(Task.status))}


def newest_created_at(session: Session) -> datetime | None:
    """When the newest task was created (one step down ix_tasks_created_at)."""
    newest = session.scalar(select(func.max(Task.created_at)))
    return dialect.as_utc(newest) if newest else None


def queued_cells(session: Session) -> list[tuple[str, str, str, int, datetime | None]]:
    """(category, phase, bucket, queued, oldest queued_at as aware UTC) per cell with queued tasks."""
    rows = session.execute(
        select(Task.category, Task.phase, Task.bucket, func.count(), func.min(Task.queued_at))
        .where(status_is(TaskStatus.QUEUED))
        .group_by(Task.category, Task.phase, Task.bucket)
    ).all()
    return [(c, p, b, n, dialect.as_utc(oldest) if oldest else None) for c, p, b, n, oldest in rows]


def finished_per_minute(session: Session, start: datetime, end: datetime) -> list[tuple[datetime, str, int]]:
    """(start of the minute as aware UTC, status, count) of tasks finished in [start, end]."""
    minute = dialect.time_bucket(dialect.is_sqlite(session), Task.finished_at, "minute").label("minute")
    # No condition on status: with one, SQLite may walk a status index over every finished task
    # instead of the finished_at range. The caller keeps the statuses it wants.
    rows = session.execute(
        select(minute, Task.status, func.count())
        .where(Task.finished_at >= start, Task.finished_at <= end)
        .group_by(minute, Task.status)
    ).all()
    return [(dialect.bucket_start(value, "minute"), status, n) for value, status, n in rows]
