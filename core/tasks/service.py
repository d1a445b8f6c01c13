"""Dispatch, upgrade, cancel and retry: the operations people and services perform on tasks.

Every state change is one compare-and-set on the tasks row (docs/architecture.md, "The
invariants", 2); the broker is told afterwards. Every operation a person performs is checked
against their role here, with the acting user passed in, and written to the audit log whatever
its outcome.
"""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Iterable

from core.auth.audit import audit, run_audited
from core.auth.permissions import (
    CANCEL_PERMISSION,
    DISPATCH_PERMISSION,
    RETRY_PERMISSION,
    UPGRADE_PERMISSIONS,
    Permission,
    dispatch_permission,
)
from core.auth.policy import authorize
from core.broker.jetstream import BrokerThread
from core.broker.messages import TaskMessage
from core.errors import (
    BrokerUnavailable,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotAnUpgrade,
    NotFound,
    WrongState,
)
from core.observe import metrics
from core.priority import Priority, parse_upgrade_action, priority_to_bucket, subject_for
from core.settings import Settings
from core.tasks import reads
from core.tasks.outbox import PUBLISH_GRACE, Publisher, publish_problem, record_published
from core.tasks.registry import TaskRegistry
from core.tasks.rows import (
    MAX_BATCH,
    DispatchRequest,
    build_task_row,
    check_optional_reason,
    check_reason,
    check_task_id,
    count_dispatched,
    row_message,
)
from db.engine import Database, Transaction
from db.models import Task, TaskStatus, utcnow
from db.queries import tasks as task_queries

log = logging.getLogger(__name__)

NO_BROKER = "no broker configured"
# How long closing waits for the publisher to hand what it holds to the stream.
FLUSH_SECONDS = 5.0


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


class TaskService:
    """The synchronous face of the engine, for the console, the command line and services.

    `broker` may be None or down: committed changes then wait for the relay, nothing is lost.
    """

    def __init__(self, settings: Settings, db: Database, registry: TaskRegistry, broker: BrokerThread | None):
        self.settings = settings
        self.db = db
        self.registry = registry
        self.broker = broker
        self.publisher = Publisher(db, broker) if broker is not None else None

    @property
    def last_publish_error(self) -> str | None:
        """Why the latest publish did not reach the stream (None: it did)."""
        return self.publisher.last_error if self.publisher is not None else NO_BROKER

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until what was dispatched so far is published (or left to the relay)."""
        return self.publisher.flush(timeout) if self.publisher is not None else True

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close(FLUSH_SECONDS)

    # -- dispatch ---------------------------------------------------------------------------

    def dispatch_task(self, name: str, *, created_by: str | None = None, **options: Any) -> str:
        return self.dispatch_tasks([DispatchRequest(name, **options)], created_by=created_by)[0]

    def dispatch_tasks(self, requests: Iterable[DispatchRequest], *, created_by: str | None = None) -> list[str]:
        """Insert every row in one transaction and return the ids once it has committed: from
        then on the tasks are kept, whatever happens to the broker or to this process. The
        publisher publishes them in the background (the relay, if this process dies first)."""
        now = utcnow()
        rows = [build_task_row(self.settings, self.registry, r, now, created_by) for r in requests]
        if not rows:
            return []
        with self.db.connect(write=True) as connection:
            task_queries.insert_tasks(connection, rows)
        count_dispatched(rows)
        self._hand_over([row_message(row) for row in rows], wait=False)
        return [row["id"] for row in rows]

    def dispatch_tasks_as(
        self, requests: Iterable[DispatchRequest], user: object, *, address: str | None = None
    ) -> Dispatched:
        """Dispatch for a person or a service (the HTTP API): needs dispatch_tasks, and at 8, 9
        or 10 the permission of the matching named action (Prioritize, Urgent, Critical) unless
        the role may dispatch at any priority (the service role). The tasks are created_by the
        user, and the request leaves one audit row (the ids are time-ordered, so a batch is
        named by its first and last)."""

        def operation() -> Dispatched:
            actor = authorize(self.db, user, DISPATCH_PERMISSION, action="dispatch", address=address)
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
            for priority in sorted({row["priority"] for row in rows}):
                escalation = dispatch_permission(priority)
                if escalation is not None and not actor.can(Permission.DISPATCH_ANY_PRIORITY):
                    doing = f"dispatch at priority {priority} ({Priority(priority).label})"
                    authorize(self.db, actor, escalation, action="dispatch", address=address, doing=doing)
            ids = [row["id"] for row in rows]
            with self.db.session(write=True) as session:
                task_queries.insert_tasks(session, rows)
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
            return Dispatched(ids, self._hand_over([row_message(row) for row in rows], wait=True))

        return run_audited(self.db, user, "dispatch", None, address, operation)

    # -- upgrade / cancel / retry -------------------------------------------------------------

    def upgrade_task(
        self, task_id: object, action: object, reason: object, user: object, *, address: str | None = None
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
                old = (task.generation, task.priority, task.bucket)
                values: dict[str, Any] = {"priority": int(target), "bucket": to_bucket}
                if requeue:
                    # A new generation in the new bucket; the old message can only be dropped.
                    values.update(generation=task.generation + 1, publish_due_at=utcnow() + PUBLISH_GRACE)
                # Within one bucket the message keeps its place in line: same generation.
                old_message = self._compare_and_set(session, task, values, priority=task.priority)
                changed_at = utcnow()
                task_queries.add_history(
                    session,
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
                self._discard(old_message)
            metrics.UPGRADES.labels(upgrade.value).inc()
            return UpgradeResult(task.id, upgrade.value, old[1], int(target), old[2], to_bucket, requeue)

        return run_audited(self.db, user, str(action)[:16] if action else "upgrade", task_id, address, operation)

    def cancel_task(self, task_id: object, user: object, *, address: str | None = None, reason: object = None) -> None:
        """Stop a queued task; the reason, if given, goes into the audit log (the timeline)."""

        def operation() -> None:
            checked_id = check_task_id(task_id)
            checked_reason = check_optional_reason(reason)
            actor = authorize(self.db, user, CANCEL_PERMISSION, action="cancel", target=checked_id, address=address)
            with self.db.session(write=True) as session:
                task = self._get(session, checked_id)
                if task.status != TaskStatus.QUEUED:
                    raise WrongState(f"task {task.id} is {task.status}: only queued tasks can be cancelled")
                message = self._compare_and_set(
                    session,
                    task,
                    {
                        "status": TaskStatus.CANCELLED,
                        "generation": task.generation + 1,
                        "publish_due_at": None,
                        "finished_at": utcnow(),
                    },
                )
                audit(
                    session, actor=actor.username, action="cancel", target=task.id, detail=checked_reason,
                    address=address,
                )  # fmt: skip
            metrics.CANCELLED.inc()
            self._discard(message)

        run_audited(self.db, user, "cancel", task_id, address, operation)

    def retry_task(self, task_id: object, user: object, *, address: str | None = None) -> None:
        """Re-run a failed task at the priority it had, with a fresh set of attempts."""

        def operation() -> None:
            checked_id = check_task_id(task_id)
            actor = authorize(
                self.db, user, RETRY_PERMISSION, action="retry", target=checked_id, address=address, doing="retry tasks"
            )
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
                        # The failed attempts are in task_attempts; the row shows the new one.
                        "error": None,
                        "worker_id": None,
                        "result": None,
                    },
                    expected_status=TaskStatus.FAILED,
                )
                audit(session, actor=actor.username, action="retry", target=task.id, address=address)
                message = TaskMessage(task.id, task.generation + 1, subject_for(task.category, task.phase, task.bucket))
            metrics.RETRIED.labels("manual").inc()
            self._publish([message])

        run_audited(self.db, user, "retry", task_id, address, operation)

    # -- reading ----------------------------------------------------------------------------

    def describe_task(self, task_id: object) -> dict[str, Any]:
        """The task as plain data, with its priority history (oldest first): for trusted callers
        (the command line); people read through core.tasks.reads, which checks view_tasks."""
        return reads.describe_task(self.db, task_id)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _get(session: Transaction, task_id: str) -> Task:
        task = task_queries.get_task(session, task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id[:64]!r}")
        return task

    @staticmethod
    def _compare_and_set(
        session: Transaction,
        task: Task,
        values: dict,
        *,
        expected_status: str = TaskStatus.QUEUED,
        priority: int | None = None,
    ) -> list[int]:
        """The CAS, or Conflict. Returns the stream sequence of the message the task had at its
        generation when the CAS won (now stale), if the stream holds one: its caller deletes it."""
        published = task_queries.compare_and_set(
            session, task.id, task.generation, expected_status, values, priority=priority
        )
        if published is None:
            raise Conflict(f"task {task.id} was changed by someone else at the same moment; reload it and try again")
        stream_seq, published_generation = published
        return [stream_seq] if stream_seq is not None and published_generation == task.generation else []

    def _hand_over(self, messages: list[TaskMessage], *, wait: bool) -> str | None:
        """Give committed rows' messages to the publisher. With wait, return why they were not
        published (None when they were) once it knows; the relay publishes them later."""
        if self.publisher is None:
            return NO_BROKER
        done = self.publisher.submit(messages, wait=wait)
        if done is None:
            return None
        try:
            return done.result(self.settings.broker_timeout_seconds * 3)
        except FutureTimeout:
            return "broker unavailable: no publish acknowledgement in time"

    def _publish(self, messages: list[TaskMessage]) -> str | None:
        """Publish now, on the caller's thread (an upgrade, a cancel or a retry must not queue
        behind a bulk dispatch); otherwise the relay does it later. Returns why not (None when
        everything was published)."""
        if self.broker is None or self.publisher is None:
            return NO_BROKER
        try:
            results = self.broker.run(self.broker.broker.publish(messages))
        except BrokerUnavailable as error:
            self.publisher.last_error = str(error)
            log.warning("%s; %d task(s) kept for the relay", error, len(messages))
            return str(error)
        failures = [r for r in results if isinstance(r, Exception)]
        problem = publish_problem(failures[0]) if failures else None
        self.publisher.last_error = problem
        try:
            stale = record_published(self.db, results)
        except DatabaseUnavailable as error:
            log.warning("published but not recorded (%s): the relay will republish, deduplicated", error)
        else:
            self._discard(stale)
        return problem

    def _discard(self, stream_seqs: list[int]) -> None:
        """Best effort: a message left behind has a stale generation and is dropped unrun."""
        if not stream_seqs or self.broker is None:
            return
        try:
            self.broker.run(self.broker.broker.discard(stream_seqs))
        except BrokerUnavailable as error:
            log.info("stale messages not deleted (%s); workers will drop them", error)
