"""The loops that turn crashes and broker loss into delay: lease reaper and reconciler
(docs/architecture.md, "The invariants", 6 and 7).

Each step is a compare-and-set per row, so any number of processes may run them at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Awaitable, Callable

from core.broker.jetstream import TaskBroker
from core.priority import subject_for, subject_parts
from db.engine import Database
from db.models import TaskStatus, utcnow
from db.queries import maintenance as queries

RECONCILE_GRACE = timedelta(seconds=10)

InThread = Callable[..., Awaitable[Any]]


def reap_expired_leases(db: Database, limit: int = 500) -> tuple[int, int]:
    """Requeue running tasks whose lease ran out (generation + 1), or fail them after their
    last attempt. Returns (requeued, failed)."""
    now = utcnow()
    with db.session() as session:
        expired = queries.expired_leases(session, now, limit)
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
            changed = queries.take_back_lease(session, row.id, row.generation, row.lease_token, values)
            if changed:
                queries.add_attempt(
                    session,
                    task_id=row.id,
                    attempt=row.attempts,
                    worker_id=row.worker_id,
                    started_at=row.started_at,
                    ended_at=now,
                    error=lost,
                )
        if changed:
            if values["status"] == TaskStatus.QUEUED:
                requeued += 1
            else:
                failed += 1
    return requeued, failed


def published_queued_counts(db: Database) -> dict[str, int]:
    """Per subject: tasks the database says are queued with their message in the stream."""
    with db.session() as session:
        rows = queries.published_queued_counts(session)
    return {subject_for(c, p, b): n for c, p, b, n in rows}


async def reconcile(db: Database, broker: TaskBroker, run_in_thread: InThread, limit: int = 5000) -> int:
    """Requeue queued tasks whose message the stream no longer has. Returns how many.

    Cheap when all is well: one stream_info call and one grouped count. Only subjects where
    the stream holds fewer messages than the database expects are checked message by message.
    """
    stream_counts = await broker.subject_counts()
    expected = await run_in_thread(published_queued_counts, db)
    short = [subject for subject, n in expected.items() if stream_counts.get(subject, 0) < n]
    requeued = 0
    for subject in short:
        category, phase, bucket = subject_parts(subject)
        candidates = await run_in_thread(_published_rows, db, category, phase, bucket, limit)
        for task_id, generation, seq in candidates:
            found = await broker.message_at(seq)
            if found is not None and found.task_id == task_id and found.generation == generation:
                continue
            requeued += await run_in_thread(_requeue_lost, db, task_id, generation, seq)
    return requeued


def _published_rows(db: Database, category: str, phase: str, bucket: str, limit: int) -> list[tuple[str, int, int]]:
    with db.session() as session:
        return queries.published_rows(session, category, phase, bucket, utcnow() - RECONCILE_GRACE, limit)


def _requeue_lost(db: Database, task_id: str, generation: int, seq: int) -> int:
    """A new generation, so the stream's duplicate window cannot swallow the republish."""
    with db.session(write=True) as session:
        return queries.requeue_lost(session, task_id, generation, seq, utcnow())
