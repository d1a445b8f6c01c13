"""Dispatch, upgrade, cancel and retry: the operations people and services perform on tasks.

Every state change is one compare-and-set on the tasks row (DESIGN section 4); the broker is
told afterwards. Every operation a person performs is checked against their role here, with
the acting user passed in, and written to the audit log whatever its outcome.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, TypeVar

from sqlalchemy import insert, select, update

from core import metrics
from core.audit import audit, run_audited
from core.broker import BrokerThread, TaskMessage
from core.errors import (
    BrokerUnavailable,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotAnUpgrade,
    NotFound,
    WrongState,
)
from core.outbox import PUBLISH_GRACE, record_published
from core.permissions import CANCEL_PERMISSION, DISPATCH_PERMISSION, RETRY_PERMISSION, UPGRADE_PERMISSIONS
from core.priority import (
    DEFAULT_PRIORITY,
    PHASES,
    Priority,
    parse_priority,
    parse_upgrade_action,
    priority_to_bucket,
    subject_for,
)
from core.registry import TaskRegistry
from core.settings import Settings
from core.users import authorize
from db.engine import Database
from db.models import PriorityHistory, Task, TaskStatus, utcnow

log = logging.getLogger(__name__)

MAX_ARGS_BYTES = 64 * 1024
MAX_REASON_LENGTH = 500
MAX_ID_LENGTH = 64
MAX_BATCH = 1000

T = TypeVar("T")


def new_task_id() -> str:
    """Opaque, but time-ordered (48-bit milliseconds + 80 random bits) for index locality."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


@dataclass(frozen=True)
class DispatchRequest:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    priority: int = DEFAULT_PRIORITY
    category: str | None = None
    phase: str | None = None
    correlation_id: str | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class Dispatched:
    task_ids: list[str]
    publish_error: str | None  # None: published; else stored, and the relay publishes later


@dataclass(frozen=True)
class UpgradeResult:
    task_id: str
    action: str
    from_priority: int
    to_priority: int
    from_bucket: str
    to_bucket: str
    requeued: bool

    def describe(self) -> str:
        move = f"{self.from_bucket} -> {self.to_bucket}" if self.requeued else f"stays in {self.to_bucket}"
        return (
            f"task {self.task_id} raised from {self.from_priority} ({Priority(self.from_priority).label}) "
            f"to {self.to_priority} ({Priority(self.to_priority).label}), {move}"
        )


def check_task_id(task_id: object) -> str:
    if not isinstance(task_id, str) or not task_id.strip() or len(task_id) > MAX_ID_LENGTH:
        raise InvalidInput(f"task ids are strings of 1-{MAX_ID_LENGTH} characters, not {str(task_id)[:80]!r}")
    return task_id.strip()


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("an upgrade needs a reason")
    reason = reason.strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"reasons are at most {MAX_REASON_LENGTH} characters")
    return reason


def retry_backoff(settings: Settings, attempt: int) -> timedelta:
    seconds = settings.retry_backoff_seconds * (2 ** max(attempt - 1, 0))
    return timedelta(seconds=min(seconds, settings.retry_backoff_max_seconds))


class TaskService:
    """The synchronous face of the engine, for the console, the command line and services.

    `broker` may be None or down: committed changes then wait for the relay, nothing is lost.
    """

    def __init__(self, settings: Settings, db: Database, registry: TaskRegistry, broker: BrokerThread | None):
        self.settings = settings
        self.db = db
        self.registry = registry
        self.broker = broker
        self.last_publish_error: str | None = None

    # -- dispatch ---------------------------------------------------------------------------

    def dispatch_task(self, name: str, *, created_by: str | None = None, **options: Any) -> str:
        return self.dispatch_tasks([DispatchRequest(name, **options)], created_by=created_by)[0]

    def dispatch_tasks(self, requests: Iterable[DispatchRequest], *, created_by: str | None = None) -> list[str]:
        """Insert every row in one transaction, then publish them pipelined.

        Returns the ids once the rows are committed: from then on the tasks are kept even if
        the broker is down (the relay publishes them when it is back).
        """
        now = utcnow()
        rows = [build_task_row(self.settings, self.registry, r, now, created_by) for r in requests]
        if not rows:
            return []
        with self.db.session(write=True) as session:
            session.execute(insert(Task), rows)
        count_dispatched(rows)
        self._publish([row_message(row) for row in rows])
        return [row["id"] for row in rows]

    def dispatch_tasks_as(
        self, requests: Iterable[DispatchRequest], user: str, *, address: str | None = None
    ) -> Dispatched:
        """Dispatch for a person or a service (the HTTP API): needs dispatch_tasks; the tasks
        are created_by the user, and the request leaves one audit row (the ids are time-ordered,
        so a batch is named by its first and last)."""

        def operation() -> Dispatched:
            actor = authorize(self.db, user, DISPATCH_PERMISSION, action="dispatch", target=None, address=address)
            batch = list(requests)
            if not 1 <= len(batch) <= MAX_BATCH:
                raise InvalidInput(f"dispatch 1 to {MAX_BATCH} tasks at a time, not {len(batch)}")
            now = utcnow()
            rows = []
            for index, request in enumerate(batch):
                try:
                    rows.append(build_task_row(self.settings, self.registry, request, now, actor.username))
                except InvalidInput as error:
                    raise InvalidInput(f"task {index}: {error}" if len(batch) > 1 else str(error)) from None
            ids = [row["id"] for row in rows]
            with self.db.session(write=True) as session:
                session.execute(insert(Task), rows)
                audit(
                    session,
                    actor=actor.username,
                    action="dispatch",
                    target=ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}",
                    detail=", ".join(sorted({row["name"] for row in rows}))
                    + (f" ({len(ids)} tasks)" if len(ids) > 1 else f" at priority {rows[0]['priority']}"),
                    address=address,
                )
            count_dispatched(rows)
            return Dispatched(ids, self._publish([row_message(row) for row in rows]))

        return self._audited(user, "dispatch", None, address, operation)

    # -- upgrade / cancel / retry -------------------------------------------------------------

    def upgrade_task(
        self, task_id: str, action: str, reason: str, user: str, *, address: str | None = None
    ) -> UpgradeResult:
        def operation() -> UpgradeResult:
            upgrade = parse_upgrade_action(action)
            checked_id = check_task_id(task_id)
            checked_reason = check_reason(reason)
            actor = authorize(
                self.db, user, UPGRADE_PERMISSIONS[upgrade], action=upgrade.value, target=checked_id, address=address
            )
            with self.db.session(write=True) as session:
                task = self._get(session, checked_id)
                if task.status != TaskStatus.QUEUED:
                    raise WrongState(f"task {task.id} is {task.status}: only queued tasks can be upgraded")
                target = upgrade.target
                if target <= task.priority:
                    raise NotAnUpgrade(
                        f"task {task.id} is already at priority {task.priority} ({Priority(task.priority).label}); "
                        f"{upgrade.value} ({int(target)}) would not raise it"
                    )
                to_bucket = priority_to_bucket(target).value
                requeue = to_bucket != task.bucket
                old = (task.generation, task.priority, task.bucket, task.stream_seq, task.published_generation)
                values: dict[str, Any] = {"priority": int(target), "bucket": to_bucket}
                if requeue:
                    # A new generation in the new bucket; the old message can only be dropped.
                    values.update(generation=task.generation + 1, publish_due_at=utcnow() + PUBLISH_GRACE)
                # Within one bucket the message keeps its place in line: same generation.
                self._compare_and_set(session, task, values, extra=(Task.priority == task.priority,))
                changed_at = utcnow()
                session.add(
                    PriorityHistory(
                        task_id=task.id,
                        changed_at=changed_at,
                        from_priority=old[1],
                        to_priority=int(target),
                        from_bucket=old[2],
                        to_bucket=to_bucket,
                        action=upgrade.value,
                        reason=checked_reason,
                        changed_by=actor.username,
                        category=task.category,
                        phase=task.phase,
                        queued_at=task.queued_at,
                        wait_before_s=(changed_at - task.queued_at).total_seconds(),
                    )
                )
                audit(
                    session,
                    actor=actor.username,
                    action=upgrade.value,
                    target=task.id,
                    detail=f"{old[1]} -> {int(target)}: {checked_reason}",
                    address=address,
                )
                new_message = TaskMessage(task.id, old[0] + 1, subject_for(task.category, task.phase, to_bucket))
            if requeue:
                self._publish([new_message])
                self._delete_old_message(old[3] if old[4] == old[0] else None)
            metrics.UPGRADES.labels(upgrade.value).inc()
            return UpgradeResult(task.id, upgrade.value, old[1], int(target), old[2], to_bucket, requeue)

        return self._audited(user, str(action)[:16] if action else "upgrade", task_id, address, operation)

    def cancel_task(self, task_id: str, user: str, *, address: str | None = None) -> None:
        def operation() -> None:
            checked_id = check_task_id(task_id)
            actor = authorize(self.db, user, CANCEL_PERMISSION, action="cancel", target=checked_id, address=address)
            with self.db.session(write=True) as session:
                task = self._get(session, checked_id)
                if task.status != TaskStatus.QUEUED:
                    raise WrongState(f"task {task.id} is {task.status}: only queued tasks can be cancelled")
                seq = task.stream_seq if task.published_generation == task.generation else None
                self._compare_and_set(
                    session,
                    task,
                    {
                        "status": TaskStatus.CANCELLED,
                        "generation": task.generation + 1,
                        "publish_due_at": None,
                        "finished_at": utcnow(),
                    },
                )
                audit(session, actor=actor.username, action="cancel", target=task.id, address=address)
            metrics.CANCELLED.inc()
            self._delete_old_message(seq)

        self._audited(user, "cancel", task_id, address, operation)

    def retry_task(self, task_id: str, user: str, *, address: str | None = None) -> None:
        """Re-run a failed task at the priority it had, with a fresh set of attempts."""

        def operation() -> None:
            checked_id = check_task_id(task_id)
            actor = authorize(self.db, user, RETRY_PERMISSION, action="retry", target=checked_id, address=address)
            with self.db.session(write=True) as session:
                task = self._get(session, checked_id)
                if task.status != TaskStatus.FAILED:
                    raise WrongState(f"task {task.id} is {task.status}: only failed tasks can be retried")
                now = utcnow()
                self._compare_and_set(
                    session,
                    task,
                    {
                        "status": TaskStatus.QUEUED,
                        "generation": task.generation + 1,
                        "publish_due_at": now + PUBLISH_GRACE,
                        "attempts": 0,
                        "queued_at": now,
                        "started_at": None,
                        "finished_at": None,
                        "lease_token": None,
                        "lease_expires_at": None,
                    },
                    expected_status=TaskStatus.FAILED,
                )
                audit(session, actor=actor.username, action="retry", target=task.id, address=address)
                message = TaskMessage(task.id, task.generation + 1, subject_for(task.category, task.phase, task.bucket))
            metrics.RETRIED.labels("manual").inc()
            self._publish([message])

        self._audited(user, "retry", task_id, address, operation)

    # -- reading ----------------------------------------------------------------------------

    def describe_task(self, task_id: str) -> dict[str, Any]:
        """The task as plain data, with its priority history (oldest first)."""
        checked_id = check_task_id(task_id)
        with self.db.session() as session:
            task = self._get(session, checked_id)
            history = session.scalars(
                select(PriorityHistory)
                .where(PriorityHistory.task_id == task.id)
                .order_by(PriorityHistory.changed_at, PriorityHistory.id)
            ).all()
            return task_to_dict(task) | {
                "priority_history": [
                    {
                        "changed_at": h.changed_at.isoformat(),
                        "from_priority": h.from_priority,
                        "to_priority": h.to_priority,
                        "from_bucket": h.from_bucket,
                        "to_bucket": h.to_bucket,
                        "action": h.action,
                        "reason": h.reason,
                        "changed_by": h.changed_by,
                    }
                    for h in history
                ]
            }

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _get(session, task_id: str) -> Task:
        task = session.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id[:64]!r}")
        return task

    @staticmethod
    def _compare_and_set(
        session, task: Task, values: dict, *, expected_status: str = TaskStatus.QUEUED, extra=()
    ) -> None:
        result = session.execute(
            update(Task)
            .where(Task.id == task.id, Task.generation == task.generation, Task.status == expected_status, *extra)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise Conflict(f"task {task.id} was changed by someone else at the same moment; reload it and try again")

    def _audited(self, user: object, action: str, target: object, address: str | None, operation: Callable[[], T]) -> T:
        return run_audited(self.db, user, action, target, address, operation)

    def _publish(self, messages: list[TaskMessage]) -> str | None:
        """Publish now if the broker answers; otherwise the relay does it later. Returns why
        not (None when everything was published)."""
        if self.broker is None:
            self.last_publish_error = "no broker configured"
            return self.last_publish_error
        try:
            results = self.broker.run(self.broker.broker.publish(messages))
        except BrokerUnavailable as error:
            self.last_publish_error = str(error)
            log.warning("%s; %d task(s) kept for the relay", error, len(messages))
            return str(error)
        failures = [r for r in results if isinstance(r, Exception)]
        problem = f"broker unavailable: {failures[0]}" if failures else None
        self.last_publish_error = problem
        try:
            record_published(self.db, results)
        except DatabaseUnavailable as error:
            log.warning("published but not recorded (%s): the relay will republish, deduplicated", error)
        return problem

    def _delete_old_message(self, stream_seq: int | None) -> None:
        """Best effort: a message left behind has a stale generation and is dropped unrun."""
        if stream_seq is None or self.broker is None:
            return
        try:
            self.broker.run(self.broker.broker.delete_message(stream_seq))
        except BrokerUnavailable as error:
            log.info("old message %s not deleted (%s); workers will drop it", stream_seq, error)


def count_dispatched(rows: list[dict]) -> None:
    for row in rows:
        metrics.DISPATCHED.labels(row["category"], row["bucket"]).inc()


def build_task_row(
    settings: Settings, registry: TaskRegistry, request: DispatchRequest, now: datetime, created_by: str | None
) -> dict:
    """A validated tasks row for a new task; raises InvalidInput with the first problem."""
    spec = registry.get(request.name)
    category = request.category or spec.category
    phase = request.phase or spec.phase
    if category not in settings.categories:
        raise InvalidInput(f"unknown category {str(category)[:64]!r}: use one of {', '.join(settings.categories)}")
    if phase not in PHASES:
        raise InvalidInput(f"unknown phase {str(phase)[:64]!r}: use one of {', '.join(PHASES)}")
    priority = parse_priority(request.priority)
    args = _check_args(request.args)
    max_attempts = settings.max_attempts if request.max_attempts is None else request.max_attempts
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or not 1 <= max_attempts <= 100:
        raise InvalidInput("max attempts must be a whole number from 1 to 100")
    correlation_id = request.correlation_id
    if correlation_id is not None and (not isinstance(correlation_id, str) or not 0 < len(correlation_id) <= 64):
        raise InvalidInput("correlation ids are strings of 1-64 characters")
    task_id = new_task_id()
    return {
        "id": task_id,
        "name": spec.name,
        "category": category,
        "phase": phase,
        "priority": int(priority),
        "bucket": priority_to_bucket(priority).value,
        "status": TaskStatus.QUEUED,
        "args": args,
        "correlation_id": correlation_id or task_id,
        "created_by": created_by,
        "generation": 1,
        "publish_due_at": now + PUBLISH_GRACE,
        "attempts": 0,
        "max_attempts": max_attempts,
        "created_at": now,
        "queued_at": now,
    }


def row_message(row: dict) -> TaskMessage:
    return TaskMessage(row["id"], row["generation"], subject_for(row["category"], row["phase"], row["bucket"]))


def _check_args(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise InvalidInput("task arguments must be a JSON object")
    try:
        encoded = json.dumps(args)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"task arguments are not JSON: {error}") from None
    if len(encoded) > MAX_ARGS_BYTES:
        raise InvalidInput(f"task arguments are {len(encoded)} bytes; the limit is {MAX_ARGS_BYTES}")
    return json.loads(encoded)


def parse_args_json(text: str | None) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"--args is not valid JSON: {error}") from None
    return _check_args(value)


def task_to_dict(task: Task) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": task.id,
        "name": task.name,
        "category": task.category,
        "phase": task.phase,
        "priority": task.priority,
        "priority_label": Priority(task.priority).label,
        "bucket": task.bucket,
        "status": task.status,
        "args": task.args,
        "result": task.result,
        "error": task.error,
        "correlation_id": task.correlation_id,
        "created_by": task.created_by,
        "generation": task.generation,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "worker_id": task.worker_id,
        "created_at": iso(task.created_at),
        "queued_at": iso(task.queued_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "publish_pending": task.publish_due_at is not None,
    }
