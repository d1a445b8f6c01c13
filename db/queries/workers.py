"""Worker presence: one row per worker process, refreshed while it runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import WorkerRecord


def register(session: Session, **values) -> None:
    session.merge(WorkerRecord(**values))


def touch(session: Session, worker_id: str, **values) -> None:
    session.execute(update(WorkerRecord).where(WorkerRecord.id == worker_id).values(**values))


def died_since(session: Session, since: datetime) -> list[WorkerRecord]:
    """Workers that died of an error after `since`, the latest first."""
    return list(
        session.scalars(
            select(WorkerRecord)
            .where(WorkerRecord.exit_error.is_not(None), WorkerRecord.stopped_at >= since)
            .order_by(WorkerRecord.stopped_at.desc())
            .limit(20)
        ).all()
    )


def seen_since(session: Session, since: datetime) -> list[WorkerRecord]:
    """Workers that reported after `since` and have not stopped, oldest first."""
    return list(
        session.scalars(
            select(WorkerRecord)
            .where(WorkerRecord.last_seen_at >= since, WorkerRecord.stopped_at.is_(None))
            .order_by(WorkerRecord.started_at)
        ).all()
    )
