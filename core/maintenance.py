"""The loops that turn crashes and broker loss into delay: lease reaper and reconciler.

Each step is a compare-and-set per row, so any number of processes may run them at once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from core.broker import TaskBroker
from core.priority import subject_for
from db.engine import Database
from db.models import Task, TaskStatus, status_is, utcnow

RECONCILE_GRACE = timedelta(seconds=10)


def reap_expired_leases(db: Database, limit: int = 500) -> tuple[int, int]:
    """Requeue running tasks whose lease ran out (generation + 1), or fail them after their
    last attempt. Returns (requeued, failed)."""
    now = utcnow()
    with db.session() as session:
        expired = session.execute(
            select(Task.id, Task.generation, Task.lease_token, Task.attempts, Task.max_attempts, Task.worker_id)
            .where(status_is(TaskStatus.RUNNING), Task.lease_expires_at < now)
            .limit(limit)
        ).all()
    requeued = failed = 0
    for row in expired:
        lost = f"worker {row.worker_id} stopped answering during attempt {row.attempts} (lease expired)"
        if row.attempts < row.max_attempts:
            values = dict(
                status=TaskStatus.QUEUED,
                generation=row.generation + 1,
                publish_due_at=now,
                queued_at=now,
                error=lost,
                lease_token=None,
                lease_expires_at=None,
            )
        else:
            values = dict(
                status=TaskStatus.FAILED,
                generation=row.generation + 1,
                error=f"{lost}; no attempts left ({row.attempts} of {row.max_attempts})",
                finished_at=now,
                lease_token=None,
                lease_expires_at=None,
            )
        with db.session(write=True) as session:
            changed = session.execute(
                update(Task)
                .where(
                    Task.id == row.id,
                    Task.generation == row.generation,
                    Task.status == TaskStatus.RUNNING,
                    Task.lease_token == row.lease_token,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            ).rowcount
        if changed == 1:
            if values["status"] == TaskStatus.QUEUED:
                requeued += 1
            else:
                failed += 1
    return requeued, failed


def published_queued_counts(db: Database) -> dict[str, int]:
    """Per subject: tasks the database says are queued with their message in the stream."""
    with db.session() as session:
        rows = session.execute(
            select(Task.category, Task.phase, Task.bucket, func.count())
            .where(status_is(TaskStatus.QUEUED), Task.publish_due_at.is_(None), Task.stream_seq.is_not(None))
            .group_by(Task.category, Task.phase, Task.bucket)
        ).all()
    return {subject_for(c, p, b): n for c, p, b, n in rows}


async def reconcile(db: Database, broker: TaskBroker, run_in_thread, limit: int = 5000) -> int:
    """Requeue queued tasks whose message the stream no longer has. Returns how many.

    Cheap when all is well: one stream_info call and one grouped count. Only subjects where
    the stream holds fewer messages than the database expects are checked message by message.
    """
    stream_counts = await broker.subject_counts()
    expected = await run_in_thread(published_queued_counts, db)
    short = [subject for subject, n in expected.items() if stream_counts.get(subject, 0) < n]
    requeued = 0
    for subject in short:
        _, category, phase, bucket = subject.split(".")
        candidates = await run_in_thread(_published_rows, db, category, phase, bucket, limit)
        for task_id, generation, seq in candidates:
            found = await broker.message_at(seq)
            if found is not None and found.task_id == task_id and found.generation == generation:
                continue
            requeued += await run_in_thread(_requeue_lost, db, task_id, generation, seq)
    return requeued


def _published_rows(db: Database, category: str, phase: str, bucket: str, limit: int) -> list[tuple[str, int, int]]:
    older_than = utcnow() - RECONCILE_GRACE
    with db.session() as session:
        return [
            tuple(row)
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


def _requeue_lost(db: Database, task_id: str, generation: int, seq: int) -> int:
    """A new generation, so the stream's duplicate window cannot swallow the republish."""
    with db.session(write=True) as session:
        return session.execute(
            update(Task)
            .where(
                Task.id == task_id,
                Task.generation == generation,
                Task.status == TaskStatus.QUEUED,
                Task.stream_seq == seq,
            )
            .values(generation=generation + 1, publish_due_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
