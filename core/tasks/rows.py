"""A task as data: validating what a caller asks for, building its row and its message, and
turning a row into what the API and the command line print."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.broker.messages import TaskMessage
from core.errors import InvalidInput
from core.observe import metrics
from core.priority import DEFAULT_PRIORITY, PHASES, Priority, parse_priority, priority_to_bucket, subject_for
from core.sanitize import check_json, check_text
from core.settings import Settings
from core.tasks.outbox import PUBLISH_GRACE
from core.tasks.registry import TaskRegistry
from core.timefmt import iso
from db.models import Task, TaskStatus

MAX_ARGS_BYTES = 64 * 1024
MAX_REASON_LENGTH = 500
MAX_ID_LENGTH = 64
MAX_BATCH = 1000


@dataclass(frozen=True)
class DispatchRequest:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    priority: int = DEFAULT_PRIORITY
    category: str | None = None
    phase: str | None = None
    correlation_id: str | None = None
    max_attempts: int | None = None


# Ids need to be unique, not secret: a generator seeded from os.urandom (once per process, and
# again in a forked child) saves a system call per task, which on the dispatch path also handed
# the GIL to the publisher's thread.
_id_random = random.Random()
os.register_at_fork(after_in_child=_id_random.seed)


def new_task_id() -> str:
    """Opaque, but time-ordered (48-bit milliseconds + 80 random bits) for index locality."""
    return f"{int(time.time() * 1000):012x}{_id_random.getrandbits(80):020x}"


def check_task_id(task_id: object) -> str:
    if not isinstance(task_id, str) or not task_id.strip() or len(task_id) > MAX_ID_LENGTH:
        raise InvalidInput(f"task ids are strings of 1-{MAX_ID_LENGTH} characters, not {str(task_id)[:80]!r}")
    return check_text(task_id.strip(), "the task id")


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("an upgrade needs a reason")
    reason = check_text(reason.strip(), "the reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"reasons are at most {MAX_REASON_LENGTH} characters")
    return reason


def check_optional_reason(reason: object) -> str | None:
    """A reason a person may give (a cancel's): None when empty, else as check_reason."""
    if reason is None or (isinstance(reason, str) and not reason.strip()):
        return None
    return check_reason(reason)


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
    args = check_args(request.args)
    max_attempts = settings.max_attempts if request.max_attempts is None else request.max_attempts
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or not 1 <= max_attempts <= 100:
        raise InvalidInput("max attempts must be a whole number from 1 to 100")
    correlation_id = request.correlation_id
    if correlation_id is not None and (not isinstance(correlation_id, str) or not 0 < len(correlation_id) <= 64):
        raise InvalidInput("correlation ids are strings of 1-64 characters")
    if correlation_id is not None:
        check_text(correlation_id, "the correlation id")
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


def count_dispatched(rows: list[dict]) -> None:
    for row in rows:
        metrics.DISPATCHED.labels(row["category"], row["bucket"]).inc()


def check_args(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise InvalidInput("task arguments must be a JSON object")
    check_json(args, "task arguments")
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
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"--args is not valid JSON: {str(error) or 'nested too deep'}") from None
    return check_args(value)


def task_to_dict(task: Task) -> dict[str, Any]:
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
