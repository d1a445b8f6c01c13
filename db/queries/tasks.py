"""One task at a time: insert, read, compare-and-set, its priority history and its pipeline."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db.models import AuditLog, PriorityHistory, Task, TaskAttempt

# A Core statement built once: the ORM's bulk insert costs more than the INSERT itself.
_INSERT_TASKS = insert(cast(Table, Task.__table__))


def insert_tasks(transaction: Session | Connection, rows: list[dict[str, Any]]) -> None:
    transaction.execute(_INSERT_TASKS, rows)


def get_task(session: Session, task_id: str) -> Task | None:
    return session.get(Task, task_id)


def compare_and_set(
    session: Session,
    task_id: str,
    generation: int,
    status: str,
    values: dict[str, Any],
    *,
    priority: int | None = None,
) -> tuple[int | None, int | None] | None:
    """`UPDATE tasks SET ... WHERE id AND generation AND status [AND priority]`. None if someone
    else changed the row first; else the row's (stream_seq, published_generation) as they were
    when this update won: which message, if any, the stream holds for it (recorded by a
    publisher that may have committed after our read)."""
    conditions = [Task.id == task_id, Task.generation == generation, Task.status == status]
    if priority is not None:
        conditions.append(Task.priority == priority)
    row = session.execute(
        update(Task)
        .where(*conditions)
        .values(**values)
        .returning(Task.stream_seq, Task.published_generation)
        .execution_options(synchronize_session=False)
    ).first()
    return None if row is None else (row[0], row[1])


def add_history(session: Session, **values: Any) -> None:
    session.add(PriorityHistory(**values))


def priority_history(session: Session, task_id: str) -> list[PriorityHistory]:
    """The task's priority changes, oldest first."""
    return list(
        session.scalars(
            select(PriorityHistory)
            .where(PriorityHistory.task_id == task_id)
            .order_by(PriorityHistory.changed_at, PriorityHistory.id)
        ).all()
    )


def attempts_of(session: Session, task_id: str) -> list[TaskAttempt]:
    """The task's attempts that did not succeed, oldest first."""
    return list(
        session.scalars(
            select(TaskAttempt).where(TaskAttempt.task_id == task_id).order_by(TaskAttempt.ended_at, TaskAttempt.id)
        ).all()
    )


def actions_on(session: Session, task_id: str, actions: tuple[str, ...]) -> list[AuditLog]:
    """What people did to the task (audit rows naming it, done), oldest first."""
    return list(
        session.scalars(
            select(AuditLog)
            .where(AuditLog.target == task_id, AuditLog.action.in_(actions), AuditLog.outcome == "ok")
            .order_by(AuditLog.at, AuditLog.id)
        ).all()
    )


def tasks_with_correlation(session: Session, correlation_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """The tasks of one correlation id (one pipeline), oldest first."""
    query = (
        select(Task.id, Task.name, Task.category, Task.phase, Task.status, Task.priority, Task.created_at)
        .where(Task.correlation_id == correlation_id)
        .order_by(Task.created_at, Task.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in session.execute(query)]
