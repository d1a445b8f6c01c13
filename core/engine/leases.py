"""The database side of running a task (docs/architecture.md, "The invariants", 6): claim,
lease, fenced finish, and running the task's function.

Every function takes an open Connection, so a worker can put a finish and the next claim in
one transaction (core.engine.group_commit); the statements are db.queries.leases'.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.broker.messages import TaskMessage
from core.errors import InvalidInput
from core.priority import subject_for
from core.sanitize import clean_json, clean_text
from core.settings import Settings
from core.tasks.outbox import PUBLISH_GRACE
from core.tasks.registry import TaskContext, TaskRegistry
from core.tasks.rows import DispatchRequest, build_task_row, row_message
from db.engine import Connection
from db.queries import leases, tasks

log = logging.getLogger(__name__)

# How much of what task code produces is kept (characters of text or of JSON).
ERROR_LIMIT = 4000
RESULT_LIMIT = 256 * 1024
EFFECT_LIMIT = 64 * 1024


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
    started_at: datetime | None = None  # when this claim was made


@dataclass
class Outcome:
    ok: bool
    result: Any = None
    error: str | None = None
    final: bool = False  # a failure that another attempt would repeat: no retry


@dataclass
class Finished:
    """A task that ran, waiting for its outcome to be recorded."""

    claimed: Claimed
    ctx: TaskContext
    outcome: Outcome
    follow_up: list[TaskMessage] = field(default_factory=list)

    def unstorable(self, error: BaseException) -> "Finished":
        """The same task, failed for good because its outcome could not be written. The text is
        plain, so writing it cannot fail the same way."""
        why = f"{type(error).__name__}: {clean_text(error, 300)}".encode("ascii", "replace").decode()
        outcome = Outcome(False, error=f"its outcome could not be stored: {why}", final=True)
        return Finished(self.claimed, self.ctx, outcome)


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
    return claim_all(connection, [(message, stream_seq)], worker_id, lease, now)[0]


def claim_all(
    connection: Connection,
    messages: list[tuple[TaskMessage, int | None]],
    worker_id: str,
    lease: timedelta,
    now: datetime,
) -> list[Claimed | None]:
    """claim() for each (message, stream_seq), in as few statements as the database allows; a
    message whose task is already in the list gets None (the same task never runs twice)."""
    tokens: dict[str, str] = {}
    claims = []
    for message, seq in messages:
        if message.task_id not in tokens:
            tokens[message.task_id] = token = os.urandom(16).hex()
            claims.append((message.task_id, message.generation, seq, token))
    rows = leases.claim_many(connection, claims, now + lease, now, worker_id)
    claimed: list[Claimed | None] = []
    for message, _ in messages:
        row = rows.pop(message.task_id, None)
        token = tokens[message.task_id]
        claimed.append(None if row is None else Claimed(**row._mapping, lease_token=token, started_at=now))
    return claimed


def hand_back(connection: Connection, claimed: Claimed, now: datetime) -> TaskMessage | None:
    """Give back a task claimed ahead that did not start: queued again, its attempt not counted.
    The message to publish for it (the relay publishes it after PUBLISH_GRACE otherwise), or
    None if its lease was lost meanwhile."""
    generation = leases.hand_back(connection, claimed.id, claimed.lease_token, now + PUBLISH_GRACE)
    if generation is None:
        return None
    return TaskMessage(claimed.id, generation, subject_for(claimed.category, claimed.phase, claimed.bucket))


def extend_lease(connection: Connection, claimed: Claimed, lease: timedelta, now: datetime) -> bool:
    return leases.extend_lease(connection, claimed.id, claimed.lease_token, now + lease)


def retry_backoff(settings: Settings, attempt: int) -> timedelta:
    seconds = settings.retry_backoff_seconds * (2 ** max(attempt - 1, 0))
    return timedelta(seconds=min(seconds, settings.retry_backoff_max_seconds))


def record_outcomes(
    connection: Connection,
    settings: Settings,
    registry: TaskRegistry,
    items: list[Finished],
    worker_id: str,
    now: datetime,
) -> list[bool]:
    """record_outcome() for each; the plain successes (no effects, no next phase) in as few
    statements as the database allows, each still fenced on its own lease token."""
    plain = {
        index: item
        for index, item in enumerate(items)
        if item.outcome.ok and not item.ctx.effects and not _next_task(registry, item.claimed.name)
    }
    recorded_ids = leases.succeed_many(
        connection, [(i.claimed.id, i.claimed.lease_token, i.outcome.result) for i in plain.values()], now
    )
    return [
        item.claimed.id in recorded_ids
        if index in plain
        else record_outcome(connection, settings, registry, item, worker_id, now)
        for index, item in enumerate(items)
    ]


def _next_task(registry: TaskRegistry, name: str) -> str | None:
    try:
        return registry.get(name).next_task
    except InvalidInput:
        return None


def record_outcome(
    connection: Connection, settings: Settings, registry: TaskRegistry, item: Finished, worker_id: str, now: datetime
) -> bool:
    """Write the outcome, fenced on the lease: succeeded (with the effects the task recorded and,
    for a pipeline, the next phase's row), queued again after a backoff, or failed after the last
    attempt. False if the lease was lost (reaped): the outcome is discarded. The next phase's
    message, to publish after the commit, is left in item.follow_up."""
    claimed = item.claimed
    follow_up = None
    effects: list[Any] = []
    if item.outcome.ok:
        try:
            effects = [clean_json(value, EFFECT_LIMIT) for value in item.ctx.effects]
            follow_up = _follow_up(settings, registry, claimed, item.outcome.result, now)
        except Exception as error:  # arguments too large, an unknown next task, an effect ...
            item.outcome = Outcome(False, error=clean_text(f"{error}", ERROR_LIMIT), final=True)
    outcome = item.outcome
    task_id, token = claimed.id, claimed.lease_token
    if outcome.ok:
        recorded = leases.succeed(connection, task_id, token, now, outcome.result)
    elif claimed.attempts < claimed.max_attempts and not outcome.final:
        due = now + retry_backoff(settings, claimed.attempts)
        recorded = leases.requeue(connection, task_id, token, now, outcome.error, due)
    else:
        recorded = leases.fail(connection, task_id, token, now, outcome.error)
    if not recorded:
        return False
    if not outcome.ok:  # the timeline keeps every attempt that did not succeed
        leases.add_attempt(
            connection,
            task_id=task_id,
            attempt=claimed.attempts,
            worker_id=worker_id,
            started_at=claimed.started_at,
            ended_at=now,
            error=outcome.error,
        )
    if outcome.ok and effects:
        leases.add_effects(
            connection,
            [
                dict(task_id=task_id, generation=claimed.generation, worker_id=worker_id, recorded_at=now, value=v)
                for v in effects
            ],
        )
    if follow_up is not None:
        tasks.insert_tasks(connection, [follow_up])
        item.follow_up = [row_message(follow_up)]
    return True


def _follow_up(
    settings: Settings, registry: TaskRegistry, claimed: Claimed, result: Any, now: datetime
) -> dict[str, Any] | None:
    """The next phase's row, for a pipeline task that succeeded (None for the last phase)."""
    next_task = registry.get(claimed.name).next_task
    if not next_task:
        return None
    request = DispatchRequest(
        next_task,
        args=result if isinstance(result, dict) else {"input": result},
        priority=claimed.priority,
        category=claimed.category,
        phase=registry.get(next_task).phase,
        correlation_id=claimed.correlation_id,
    )
    try:
        return build_task_row(settings, registry, request, now, f"pipeline:{claimed.id}")
    except InvalidInput as error:
        raise InvalidInput(f"its follow-up {next_task} could not be dispatched: {error}") from None


def run_task(registry: TaskRegistry, claimed: Claimed, ctx: TaskContext) -> Outcome:
    """Call the task's function. Whatever it does (raise anything, even SystemExit; return
    something JSON cannot hold) is its own outcome, described safely: never the worker's."""
    try:
        spec = registry.get(claimed.name)
        result = spec.func(ctx, **(claimed.args or {}))
        return Outcome(True, clean_json(result, RESULT_LIMIT))
    except BaseException as error:
        described = describe_failure(error)
        log.info("task %s (%s) failed: %s", claimed.id, claimed.name, described, extra={"task_id": claimed.id})
        return Outcome(False, error=described)


def describe_failure(error: BaseException) -> str:
    """`Type: message (at file:line)`, safe to store and at most about ERROR_LIMIT long."""
    try:
        last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
        where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    except Exception:
        where = ""
    return clean_text(f"{type(error).__name__}: {clean_text(error, ERROR_LIMIT)}{where}", ERROR_LIMIT)
