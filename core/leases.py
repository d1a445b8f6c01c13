"""The database side of running a task (DESIGN section 4, invariant 6): claim, lease, fenced finish.

Every function takes an open Connection, so a worker can put a finish and the next claim in
one transaction (core.group_commit). Statements are built once: the worker runs them for every
task, and building a statement costs more than running it.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.engine import Connection

from core.broker import TaskMessage
from core.registry import TaskContext, TaskRegistry
from core.settings import Settings
from core.tasks import DispatchRequest, build_task_row, retry_backoff, row_message
from db.models import Task, TaskEffect, TaskStatus, UTCDateTime

log = logging.getLogger(__name__)


@dataclass
class Claimed:
    id: str
    name: str
    args: dict[str, Any]
    priority: int
    category: str
    phase: str
    correlation_id: str | None
    generation: int
    attempts: int
    max_attempts: int
    bucket: str
    queued_at: datetime
    lease_token: str


@dataclass
class Outcome:
    ok: bool
    result: Any = None
    error: str | None = None


@dataclass
class Finished:
    """A task that ran, waiting for its outcome to be recorded."""

    claimed: Claimed
    ctx: TaskContext
    outcome: Outcome
    follow_up: list[TaskMessage] = field(default_factory=list)


_tasks = Task.__table__

_CLAIM = (
    update(_tasks)
    .where(
        _tasks.c.id == bindparam("b_id"),
        _tasks.c.generation == bindparam("b_generation"),
        _tasks.c.status == TaskStatus.QUEUED,
    )
    .values(
        status=TaskStatus.RUNNING,
        lease_token=bindparam("b_token"),
        lease_expires_at=bindparam("b_expires", type_=UTCDateTime()),
        attempts=_tasks.c.attempts + 1,
        started_at=bindparam("b_now", type_=UTCDateTime()),
        worker_id=bindparam("b_worker"),
        publish_due_at=None,
        published_generation=bindparam("b_generation"),
        stream_seq=bindparam("b_seq"),
    )
    .returning(
        _tasks.c.id,
        _tasks.c.name,
        _tasks.c.args,
        _tasks.c.priority,
        _tasks.c.category,
        _tasks.c.phase,
        _tasks.c.correlation_id,
        _tasks.c.generation,
        _tasks.c.attempts,
        _tasks.c.max_attempts,
        _tasks.c.bucket,
        _tasks.c.queued_at,
    )
)

_LEASED = (
    _tasks.c.id == bindparam("b_id"),
    _tasks.c.lease_token == bindparam("b_token"),
    _tasks.c.status == TaskStatus.RUNNING,
)

_EXTEND = update(_tasks).where(*_LEASED).values(lease_expires_at=bindparam("b_expires", type_=UTCDateTime()))

_RELEASED = dict(lease_token=None, lease_expires_at=None)
_SUCCEEDED = (
    update(_tasks)
    .where(*_LEASED)
    .values(
        status=TaskStatus.SUCCEEDED,
        result=bindparam("b_result", type_=_tasks.c.result.type),
        error=None,
        finished_at=bindparam("b_now", type_=UTCDateTime()),
        **_RELEASED,
    )
)
_RETRY = (
    update(_tasks)
    .where(*_LEASED)
    .values(
        status=TaskStatus.QUEUED,
        generation=_tasks.c.generation + 1,
        error=bindparam("b_error"),
        queued_at=bindparam("b_now", type_=UTCDateTime()),
        publish_due_at=bindparam("b_due", type_=UTCDateTime()),
        **_RELEASED,
    )
)
_FAILED = (
    update(_tasks)
    .where(*_LEASED)
    .values(
        status=TaskStatus.FAILED,
        error=bindparam("b_error"),
        finished_at=bindparam("b_now", type_=UTCDateTime()),
        **_RELEASED,
    )
)


def claim(
    connection: Connection,
    message: TaskMessage,
    stream_seq: int | None,
    worker_id: str,
    lease: timedelta,
    now: datetime,
) -> Claimed | None:
    """queued -> running for exactly this message's generation, with a new lease token.
    None for a stale message (upgraded, cancelled or already run): it must not run."""
    token = os.urandom(16).hex()
    row = connection.execute(
        _CLAIM,
        {
            "b_id": message.task_id,
            "b_generation": message.generation,
            "b_token": token,
            "b_expires": now + lease,
            "b_now": now,
            "b_worker": worker_id,
            "b_seq": stream_seq,
        },
    ).first()
    return None if row is None else Claimed(*row, lease_token=token)


def extend_lease(connection: Connection, claimed: Claimed, lease: timedelta, now: datetime) -> bool:
    params = {"b_id": claimed.id, "b_token": claimed.lease_token, "b_expires": now + lease}
    return connection.execute(_EXTEND, params).rowcount == 1


def record_outcome(
    connection: Connection, settings: Settings, registry: TaskRegistry, item: Finished, worker_id: str, now: datetime
) -> bool:
    """Write the outcome, fenced on the lease: succeeded (with the effects the task recorded and,
    for a pipeline, the next phase's row), queued again after a backoff, or failed after the last
    attempt. False if the lease was lost (reaped): the outcome is discarded. The next phase's
    message, to publish after the commit, is left in item.follow_up."""
    claimed, outcome = item.claimed, item.outcome
    params: dict[str, Any] = {"b_id": claimed.id, "b_token": claimed.lease_token, "b_now": now}
    if outcome.ok:
        statement = _SUCCEEDED
        params["b_result"] = outcome.result
    elif claimed.attempts < claimed.max_attempts:
        statement = _RETRY
        params.update(b_error=outcome.error, b_due=now + retry_backoff(settings, claimed.attempts))
    else:
        statement = _FAILED
        params["b_error"] = outcome.error
    if connection.execute(statement, params).rowcount != 1:
        return False
    if outcome.ok and item.ctx.effects:
        connection.execute(
            insert(TaskEffect.__table__),
            [
                dict(task_id=claimed.id, generation=claimed.generation, worker_id=worker_id, recorded_at=now, value=v)
                for v in item.ctx.effects
            ],
        )
    next_task = registry.get(claimed.name).next_task if outcome.ok else None
    if next_task:
        request = DispatchRequest(
            next_task,
            args=outcome.result if isinstance(outcome.result, dict) else {"input": outcome.result},
            priority=claimed.priority,
            category=claimed.category,
            phase=registry.get(next_task).phase,
            correlation_id=claimed.correlation_id,
        )
        row = build_task_row(settings, registry, request, now, f"pipeline:{claimed.id}")
        connection.execute(insert(_tasks), [row])
        item.follow_up = [row_message(row)]
    return True


def run_task(registry: TaskRegistry, claimed: Claimed, ctx: TaskContext) -> Outcome:
    """Call the task's function; any exception is the task's failure, described in one line."""
    try:
        spec = registry.get(claimed.name)
        result = spec.func(ctx, **(claimed.args or {}))
        return Outcome(True, _jsonable(result))
    except Exception as error:
        log.info("task %s (%s) failed: %s", claimed.id, claimed.name, error, extra={"task_id": claimed.id})
        last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
        where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        return Outcome(False, error=f"{type(error).__name__}: {error}{where}"[:4000])


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:4000]
