"""The worker's statements: claim, lease extension and the fenced outcome.

Built once: the worker runs them for every task, and building a statement costs more than
running it. Each takes an open Connection, so a worker can put a finish and the next claim in
one transaction (core.engine.group_commit).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Integer, String, Table, bindparam, insert, update
from sqlalchemy.engine import Connection, Row

from db import dialect
from db.models import Task, TaskAttempt, TaskEffect, TaskStatus, UTCDateTime

_tasks = cast(Table, Task.__table__)

_CLAIMED_COLUMNS = (
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
_CLAIM_VALUES = dict(
    status=TaskStatus.RUNNING,
    lease_expires_at=bindparam("b_expires", type_=UTCDateTime()),
    attempts=_tasks.c.attempts + 1,
    started_at=bindparam("b_now", type_=UTCDateTime()),
    worker_id=bindparam("b_worker"),
    publish_due_at=None,
)
_CLAIM = (
    update(_tasks)
    .where(
        _tasks.c.id == bindparam("b_id"),
        _tasks.c.generation == bindparam("b_generation"),
        _tasks.c.status == TaskStatus.QUEUED,
    )
    .values(
        lease_token=bindparam("b_token"),
        published_generation=bindparam("b_generation"),
        stream_seq=bindparam("b_seq"),
        **_CLAIM_VALUES,
    )
    .returning(*_CLAIMED_COLUMNS)
)


# For many rows at once (PostgreSQL): the same compare-and-set as _CLAIM for each row of
# (id, generation, seq, token), one statement with an array parameter per column.
_CLAIM_ROWS = dialect.array_rows("claims", id=String, generation=Integer, seq=BigInteger, token=String)
_CLAIM_MANY = (
    update(_tasks)
    .where(
        _tasks.c.id == _CLAIM_ROWS.c.id,
        _tasks.c.generation == _CLAIM_ROWS.c.generation,
        _tasks.c.status == TaskStatus.QUEUED,
    )
    .values(
        lease_token=_CLAIM_ROWS.c.token,
        published_generation=_CLAIM_ROWS.c.generation,
        stream_seq=_CLAIM_ROWS.c.seq,
        **_CLAIM_VALUES,
    )
    .returning(*_CLAIMED_COLUMNS)
)

_LEASED = (
    _tasks.c.id == bindparam("b_id"),
    _tasks.c.lease_token == bindparam("b_token"),
    _tasks.c.status == TaskStatus.RUNNING,
)

_EXTEND = update(_tasks).where(*_LEASED).values(lease_expires_at=bindparam("b_expires", type_=UTCDateTime()))

_RELEASED = dict(lease_token=None, lease_expires_at=None)


_SUCCEED_ROWS = dialect.array_rows("outcomes", id=String, token=String, result=_tasks.c.result.type)
_SUCCEED_MANY = (
    update(_tasks)
    .where(
        _tasks.c.id == _SUCCEED_ROWS.c.id,
        _tasks.c.lease_token == _SUCCEED_ROWS.c.token,
        _tasks.c.status == TaskStatus.RUNNING,
    )
    .values(
        status=TaskStatus.SUCCEEDED,
        result=_SUCCEED_ROWS.c.result,
        error=None,
        finished_at=bindparam("b_now", type_=UTCDateTime()),
        **_RELEASED,
    )
    .returning(_tasks.c.id)
)
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
# A task claimed ahead of its start that its slot could not start soon enough: queued again
# as a new generation (so any copy of its old message is stale), as if never claimed.
_HAND_BACK = (
    update(_tasks)
    .where(*_LEASED)
    .values(
        status=TaskStatus.QUEUED,
        generation=_tasks.c.generation + 1,
        attempts=_tasks.c.attempts - 1,
        started_at=None,
        worker_id=None,
        publish_due_at=bindparam("b_due", type_=UTCDateTime()),
        **_RELEASED,
    )
    .returning(_tasks.c.generation)
)
_INSERT_EFFECTS = insert(cast(Table, TaskEffect.__table__))
_INSERT_ATTEMPT = insert(cast(Table, TaskAttempt.__table__))


def claim(
    connection: Connection,
    task_id: str,
    generation: int,
    stream_seq: int | None,
    token: str,
    expires: datetime,
    now: datetime,
    worker_id: str,
) -> Row[Any] | None:
    """queued -> running for exactly this generation. The claimed row's id, name, args,
    priority, category, phase, correlation_id, generation, attempts, max_attempts, bucket,
    queued_at; or None when the row is not queued at this generation."""
    params = {
        "b_id": task_id,
        "b_generation": generation,
        "b_token": token,
        "b_expires": expires,
        "b_now": now,
        "b_worker": worker_id,
        "b_seq": stream_seq,
    }
    return connection.execute(_CLAIM, params).first()


def claim_many(
    connection: Connection,
    claims: list[tuple[str, int, int | None, str]],
    expires: datetime,
    now: datetime,
    worker_id: str,
) -> dict[str, Row[Any]]:
    """claim() for each (task_id, generation, stream_seq, token), ids distinct: the claimed
    rows by id, each with the columns claim() returns. One statement where the database can
    update from arrays; one per row where it cannot."""
    if len(claims) > 1 and dialect.updates_from_arrays(connection):
        params = {
            "b_expires": expires,
            "b_now": now,
            "b_worker": worker_id,
            **dialect.array_params(_CLAIM_ROWS, claims),
        }
        return {row.id: row for row in connection.execute(_CLAIM_MANY, params)}
    found = {}
    for task_id, generation, seq, token in claims:
        row = claim(connection, task_id, generation, seq, token, expires, now, worker_id)
        if row is not None:
            found[task_id] = row
    return found


def extend_lease(connection: Connection, task_id: str, token: str, expires: datetime) -> bool:
    return connection.execute(_EXTEND, {"b_id": task_id, "b_token": token, "b_expires": expires}).rowcount == 1


def succeed(connection: Connection, task_id: str, token: str, now: datetime, result: Any) -> bool:
    params = {"b_id": task_id, "b_token": token, "b_now": now, "b_result": result}
    return connection.execute(_SUCCEEDED, params).rowcount == 1


def succeed_many(connection: Connection, outcomes: list[tuple[str, str, Any]], now: datetime) -> set[str]:
    """succeed() for each (task_id, token, result), ids distinct: the ids whose lease still held."""
    if len(outcomes) > 1 and dialect.updates_from_arrays(connection):
        params = {"b_now": now, **dialect.array_params(_SUCCEED_ROWS, outcomes)}
        return set(connection.execute(_SUCCEED_MANY, params).scalars())
    return {task_id for task_id, token, result in outcomes if succeed(connection, task_id, token, now, result)}


def requeue(connection: Connection, task_id: str, token: str, now: datetime, error: str | None, due: datetime) -> bool:
    params = {"b_id": task_id, "b_token": token, "b_now": now, "b_error": error, "b_due": due}
    return connection.execute(_RETRY, params).rowcount == 1


def fail(connection: Connection, task_id: str, token: str, now: datetime, error: str | None) -> bool:
    params = {"b_id": task_id, "b_token": token, "b_now": now, "b_error": error}
    return connection.execute(_FAILED, params).rowcount == 1


def hand_back(connection: Connection, task_id: str, token: str, due: datetime) -> int | None:
    """running -> queued for a task that never started; its new generation (None: lease lost)."""
    return connection.execute(_HAND_BACK, {"b_id": task_id, "b_token": token, "b_due": due}).scalar()


def add_effects(connection: Connection, rows: list[dict[str, Any]]) -> None:
    connection.execute(_INSERT_EFFECTS, rows)


def add_attempt(connection: Connection, **values: Any) -> None:
    """An attempt that ended without success (task_id, attempt, worker_id, started_at, ended_at, error)."""
    connection.execute(_INSERT_ATTEMPT, [values])
