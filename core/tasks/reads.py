"""Reading tasks as a user: the console's grid and task page and the HTTP API call the same
function for each read, which checks `view_tasks` for the acting user.

Input from the wire (the API's query string) is checked strictly: unknown filter values and
sort columns are refused with a message that names them. The console's controls are parsed
leniently (db.queries.task_list.TaskFilters.from_inputs): a forged value matches nothing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable, Iterator, Sequence

from core.auth.permissions import CANCEL_PERMISSION, RETRY_PERMISSION, UPGRADE_PERMISSIONS, Permission
from core.auth.policy import authorize
from core.errors import InvalidInput, NotFound
from core.priority import BUCKETS_IN_ORDER, DEFAULT_PRIORITY, PHASES, Priority, UpgradeAction
from core.sanitize import check_text
from core.tasks.rows import DispatchRequest, check_task_id, task_to_dict
from core.timefmt import iso
from db.engine import Database
from db.models import TaskStatus
from db.queries import task_list
from db.queries import tasks as task_queries
from db.queries.task_list import COUNT_CAP, MAX_PAGE, MAX_TEXT, SORT_COLUMNS, TaskFilters

__all__ = [
    "MAX_PAGE",
    "MAX_TEXT",
    "COUNT_CAP",
    "TaskFilters",
    "TaskQuery",
    "TaskPage",
    "TaskStatus",
    "list_tasks",
    "get_task",
    "describe_task",
]

DISPATCH_FIELDS = ("name", "args", "priority", "category", "phase", "correlation_id", "max_attempts")
DEFAULT_LIMIT = 100
# An offset is a walk over every row before it: bounded. Deeper pages follow a cursor (keyset:
# the sort keys of the last row seen), which costs what the first page costs.
MAX_OFFSET = COUNT_CAP
UPGRADES = tuple(a.value for a in UpgradeAction)  # prioritize, urgent, critical
ACTIONS = UPGRADES + ("cancel", "retry")


@dataclass(frozen=True)
class TaskQuery:
    filters: TaskFilters
    sort: tuple[tuple[str, str], ...] | Sequence[Any] | None
    offset: int
    limit: int
    cursor: str | None = None  # from a previous page's next_cursor: the rows after it


@dataclass(frozen=True)
class TaskPage:
    rows: list[dict[str, Any]]  # task_summary() of each
    total: int | None  # exact up to COUNT_CAP matches, None beyond
    offset: int | None  # None when the page followed a cursor
    limit: int
    next_cursor: str | None  # None on the last page

    @property
    def next_offset(self) -> int | None:
        if self.offset is None or self.next_cursor is None or self.offset + self.limit > MAX_OFFSET:
            return None
        return self.offset + self.limit


# -- the reads -----------------------------------------------------------------------------------


def list_tasks(db: Database, actor: object, query: TaskQuery, *, address: str | None = None) -> TaskPage:
    """A page of tasks in one of the index orders (db.queries.task_list)."""
    authorize(db, actor, Permission.VIEW_TASKS, action="task.view", address=address)
    order = task_list.page_keys(query.sort)
    after = decode_cursor(query.cursor, order) if query.cursor else None
    if after is None and query.offset > MAX_OFFSET:
        raise InvalidInput(f"offsets go up to {MAX_OFFSET:,}: page deeper with the cursor of the page before")
    start, end = (0, query.limit) if after is not None else (query.offset, query.offset + query.limit)
    with db.reading() as session:
        rows, total = task_list.list_tasks(session, query.filters, query.sort, start, end, after=after)
    full = len(rows) == query.limit and (total is None or after is not None or end < total)
    next_cursor = encode_cursor(order, rows[-1]) if full and rows else None
    offset = None if after is not None else query.offset
    return TaskPage([task_summary(r) for r in rows], total, offset, query.limit, next_cursor)


def encode_cursor(order: Sequence[tuple[str, str]], row: dict[str, Any]) -> str:
    """An opaque cursor: the order it belongs to and the last row's values of its keys."""
    values = [row[SORT_COLUMNS[column].key] for column, _ in order]
    payload = {
        "o": [f"{c}:{d}" for c, d in order],
        "v": [v.isoformat() if isinstance(v, datetime) else v for v in values],
    }
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: object, order: Sequence[tuple[str, str]]) -> list[Any]:
    """The key values a cursor holds, checked against the order of the page asked for."""
    problem = InvalidInput("the cursor is not one this list gave out: start again from the first page")
    if not isinstance(cursor, str) or len(cursor) > 1000:
        raise problem
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise problem from None
    if not isinstance(payload, dict) or payload.get("o") != [f"{c}:{d}" for c, d in order]:
        raise InvalidInput("the cursor belongs to another sort order: start again from the first page")
    values = payload.get("v")
    if not isinstance(values, list) or len(values) != len(order):
        raise problem
    checked: list[Any] = []
    for (column, _), value in zip(order, values):
        if column == "created" and isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise problem from None
            if parsed.tzinfo is None:
                raise problem
            checked.append(parsed)
        elif column == "priority" and isinstance(value, int) and not isinstance(value, bool):
            checked.append(value)
        elif column in ("status", "name", "id") and isinstance(value, str) and len(value) <= 100:
            checked.append(check_text(value, "the cursor"))
        else:
            raise problem
    return checked


def get_task(
    db: Database, actor: object, task_id: object, *, address: str | None = None, related: bool = False
) -> dict[str, Any]:
    """One task with its priority history (and, with `related`, the other tasks of its
    pipeline), for a user who may view tasks."""
    checked = check_task_id(task_id)
    authorize(db, actor, Permission.VIEW_TASKS, action="task.view", target=checked, address=address)
    return describe_task(db, checked, related=related)


def describe_task(db: Database, task_id: object, *, related: bool = False) -> dict[str, Any]:
    """The task as plain data, with its priority history (oldest first) and, with `related`
    (the console's task page), the other tasks of its correlation id and its timeline. For
    callers that checked the reader already."""
    checked = check_task_id(task_id)
    with db.reading() as session:
        task = task_queries.get_task(session, checked)
        if task is None:
            raise NotFound(f"no task with id {checked[:64]!r}")
        history = task_queries.priority_history(session, task.id)
        pipeline = (
            task_queries.tasks_with_correlation(session, task.correlation_id) if related and task.correlation_id else []
        )
        events = _timeline(session, task, history) if related else []
        described = task_to_dict(task) | {
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
    if related:
        described["related"] = [dict(r, created_at=iso(r["created_at"])) for r in pipeline if r["id"] != task.id]
        described["timeline"] = events
    return described


TIMELINE_ACTIONS = ("cancel", "retry")


def _timeline(session: Any, task: Any, history: list[Any]) -> list[dict[str, Any]]:
    """Who did what to the task and when, oldest first: {"at", "what", "who", "detail"}.
    From the row (dispatched, the current attempt), the priority history (upgrades), the audit
    log (cancel, retry) and the attempts that did not succeed."""
    first = history[0].from_priority if history else task.priority
    events: list[dict[str, Any]] = [
        {"at": task.created_at, "what": "Dispatched", "who": task.created_by,
         "detail": f"at priority {first} ({Priority(first).label})"},
    ]  # fmt: skip
    for change in history:
        events.append(
            {
                "at": change.changed_at,
                "what": f"Upgraded {change.from_priority} → {change.to_priority} ({change.action})",
                "who": change.changed_by,
                "detail": change.reason,
            }
        )
    for row in task_queries.actions_on(session, task.id, TIMELINE_ACTIONS):
        what = "Cancelled" if row.action == "cancel" else "Retried"
        events.append({"at": row.at, "what": what, "who": row.actor, "detail": row.detail})
    for attempt in task_queries.attempts_of(session, task.id):
        if attempt.started_at is not None:
            events.append(
                {"at": attempt.started_at, "what": f"Attempt {attempt.attempt} started", "who": attempt.worker_id,
                 "detail": None}
            )  # fmt: skip
        events.append(
            {"at": attempt.ended_at, "what": f"Attempt {attempt.attempt} failed", "who": attempt.worker_id,
             "detail": attempt.error}
        )  # fmt: skip
    if task.started_at is not None:
        events.append(
            {"at": task.started_at, "what": f"Attempt {task.attempts} started", "who": task.worker_id, "detail": None}
        )
    if task.finished_at is not None and task.status == TaskStatus.SUCCEEDED:
        events.append({"at": task.finished_at, "what": "Succeeded", "who": task.worker_id, "detail": None})
    unique = {(e["at"], e["what"]): e for e in events}  # a failed task's last attempt is on its row too
    return [dict(e, at=iso(e["at"])) for e in sorted(unique.values(), key=lambda e: e["at"])]


# -- shaping -----------------------------------------------------------------------------------


def task_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A task as a line of a list: the API's list and the console's grid."""
    return {
        "id": row["id"],
        "name": row["name"],
        "category": row["category"],
        "phase": row["phase"],
        "priority": row["priority"],
        "priority_label": Priority(row["priority"]).label,
        "bucket": row["bucket"],
        "status": row["status"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "correlation_id": row["correlation_id"],
        "created_at": iso(row["created_at"]),
        "queued_at": iso(row["queued_at"]),
    }


def count_newer(db: Database, actor: object, filters: TaskFilters, *, cap: int = 1000) -> int | None:
    """How many tasks matching `filters` were created after its anchor (up to `cap`; None
    beyond): the grid's "N new tasks"."""
    if filters.created_before is None:
        return 0
    authorize(db, actor, Permission.VIEW_TASKS, action="task.view")
    newer = replace(filters, created_before=None)
    with db.reading() as session:
        return task_list.count_tasks(session, newer, cap=cap, created_after=filters.created_before)


def allowed_actions(status: str, priority: int, permissions: Iterable[Permission]) -> list[str]:
    """The actions to offer on one task: only those the role has and that would do something.
    A convenience for the buttons: core checks the permission again on every call."""
    held = frozenset(permissions)
    actions: list[str] = []
    if status == TaskStatus.QUEUED:
        for upgrade in UpgradeAction:
            if UPGRADE_PERMISSIONS[upgrade] in held and int(upgrade.target) > int(priority):
                actions.append(upgrade.value)
        if CANCEL_PERMISSION in held:
            actions.append("cancel")
    elif status == TaskStatus.FAILED and RETRY_PERMISSION in held:
        actions.append("retry")
    return actions


# -- parsing what the API sends ------------------------------------------------------------------


def dispatch_request(item: object) -> DispatchRequest:
    """One task of a dispatch body: {"name": ..., optional "args", "priority", "category",
    "phase", "correlation_id", "max_attempts"}, with JSON types checked."""
    if not isinstance(item, dict):
        raise InvalidInput('a task is a JSON object such as {"name": "demo.echo"}')
    unknown = sorted(str(key)[:40] for key in item if key not in DISPATCH_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}: a task has {', '.join(DISPATCH_FIELDS)}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput('a task needs a "name" (a registered task name, e.g. "demo.echo")')
    priority = item.get("priority", DEFAULT_PRIORITY)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidInput(f"priority must be a whole number from 0 to 10, not {str(priority)[:40]!r}")
    for key in ("category", "phase", "correlation_id"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise InvalidInput(f"{key} must be a string")
    max_attempts = item.get("max_attempts")
    if max_attempts is not None and (not isinstance(max_attempts, int) or isinstance(max_attempts, bool)):
        raise InvalidInput("max_attempts must be a whole number from 1 to 100")
    args = item.get("args")
    if args is not None and not isinstance(args, dict):
        raise InvalidInput("task arguments must be a JSON object")
    return DispatchRequest(
        name=name,
        args=args or {},
        priority=priority,
        category=item.get("category") or None,
        phase=item.get("phase") or None,
        correlation_id=item.get("correlation_id"),
        max_attempts=max_attempts,
    )


def dispatch_requests(items: object, *, batch: bool) -> Iterator[DispatchRequest]:
    """The tasks of a dispatch body, parsed one by one as the service takes them (after its
    permission check: a caller who may not dispatch learns nothing about task names)."""
    if batch and not isinstance(items, list):
        raise InvalidInput('a batch is {"tasks": [task, ...]}')
    listed = items if isinstance(items, list) else [items]

    def parsed() -> Iterator[DispatchRequest]:
        for index, item in enumerate(listed):
            try:
                yield dispatch_request(item)
            except InvalidInput as error:
                raise InvalidInput(f"task {index}: {error}" if batch else str(error)) from None

    return parsed()


def _words(values: Iterable[object] | None, what: str, allowed: Iterable[str]) -> tuple[str, ...]:
    """Repeated and/or comma-separated values, each one of `allowed`."""
    choices = tuple(allowed)
    words: list[str] = []
    for value in values or ():
        for word in str(value).split(","):
            word = word.strip()
            if not word:
                continue
            if word not in choices:
                raise InvalidInput(f"unknown {what} {word[:40]!r}: use one of {', '.join(choices)}")
            if word not in words:
                words.append(word)
    return tuple(words)


def _sort(value: str | None) -> tuple[tuple[str, str], ...]:
    """ "priority:desc,created:asc", "-priority" or "name": the console grid's sortable columns."""
    if not value:
        return ()
    keys: list[tuple[str, str]] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        column, _, direction = part.partition(":")
        if column.startswith("-") and not direction:
            column, direction = column[1:], "desc"
        direction = direction or "asc"
        if column not in SORT_COLUMNS or direction not in ("asc", "desc"):
            raise InvalidInput(
                f"cannot sort by {part[:40]!r}: use column[:asc|desc] or -column with {', '.join(SORT_COLUMNS)}"
            )
        if column in {c for c, _ in keys}:
            raise InvalidInput(f"sort names {column!r} twice")
        keys.append((column, direction))
    if len(keys) > 3:
        raise InvalidInput("sort by at most 3 columns")
    return tuple(keys)


def _number(value: object, what: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number from {low} to {high}") from None
    if not low <= number <= high:
        raise InvalidInput(f"{what} must be a whole number from {low} to {high}")
    return number


def task_query(
    categories_known: Iterable[str],
    *,
    statuses=None,
    buckets=None,
    categories=None,
    phases=None,
    text: str | None = None,
    sort: str | None = None,
    offset: object = None,
    limit: object = None,
    cursor: str | None = None,
) -> TaskQuery:
    """The Tasks page's filters, sorts and paging from query-string values (lists of strings)."""
    if text is not None and len(text.strip()) > MAX_TEXT:
        raise InvalidInput(f"the search text is at most {MAX_TEXT} characters")
    filters = TaskFilters(
        _words(statuses, "status", TaskStatus.ALL),
        _words(buckets, "bucket", [b.value for b in BUCKETS_IN_ORDER]),
        _words(categories, "category", categories_known),
        _words(phases, "phase", PHASES),
        (text or "").strip(),
    )
    offset_value = _number(offset, "offset", 0, 0, MAX_OFFSET)
    if cursor and offset_value:
        raise InvalidInput("use either offset or cursor, not both")
    return TaskQuery(
        filters, _sort(sort), offset_value, _number(limit, "limit", DEFAULT_LIMIT, 1, MAX_PAGE), cursor or None
    )
