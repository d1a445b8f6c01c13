"""The HTTP API's operations, as core functions of an acting user (no Flask here).

dashboard/api.py turns a request into one call of `TaskApi` with the user its token belongs
to, and the errors raised here into status codes. Permissions are the console's (DESIGN
section 2), checked here or in TaskService on every call: reading needs view_tasks, queue
depths view_dashboard, dispatching dispatch_tasks, and upgrade/cancel/retry what they need in
the console. Input from the wire is checked strictly: unknown fields, unknown filter values and
wrong JSON types are refused with a message that names them, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from core.errors import BrokerUnavailable, InvalidInput
from core.permissions import Permission
from core.priority import BUCKETS_IN_ORDER, DEFAULT_PRIORITY, PHASES, Priority
from core.runtime import Runtime
from core.stats import broker_depths, database_stats
from core.tasks import Dispatched, DispatchRequest, UpgradeResult, check_task_id
from core.users import authorize
from db.models import TaskStatus
from db.queries import COUNT_CAP, MAX_PAGE, MAX_TEXT, SORT_COLUMNS, TaskFilters, iso, list_tasks

DISPATCH_FIELDS = ("name", "args", "priority", "category", "phase", "correlation_id", "max_attempts")
DEFAULT_LIMIT = 100
MAX_OFFSET = 100_000  # an offset is a walk over the rows before it: bounded, like the console's grid


@dataclass(frozen=True)
class TaskQuery:
    filters: TaskFilters
    sort: tuple[tuple[str, str], ...]
    offset: int
    limit: int


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


def _requests(items: list, batch: bool) -> Iterator[DispatchRequest]:
    for index, item in enumerate(items):
        try:
            yield dispatch_request(item)
        except InvalidInput as error:
            raise InvalidInput(f"task {index}: {error}" if batch else str(error)) from None


def _words(values: Iterable[object] | None, what: str, allowed: Iterable[str]) -> tuple[str, ...]:
    """Repeated and/or comma-separated values, each one of `allowed`."""
    allowed = tuple(allowed)
    words: list[str] = []
    for value in values or ():
        for word in str(value).split(","):
            word = word.strip()
            if not word:
                continue
            if word not in allowed:
                raise InvalidInput(f"unknown {what} {word[:40]!r}: use one of {', '.join(allowed)}")
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
    return TaskQuery(
        filters,
        _sort(sort),
        _number(offset, "offset", 0, 0, MAX_OFFSET),
        _number(limit, "limit", DEFAULT_LIMIT, 1, MAX_PAGE),
    )


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
    }


class TaskApi:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.db = runtime.db
        self.service = runtime.service

    def dispatch(self, user: str, items: list, *, batch: bool, address: str | None = None) -> Dispatched:
        """The items are parsed after the permission check: a caller who may not dispatch
        learns nothing about task names from the error."""
        if batch and not isinstance(items, list):
            raise InvalidInput('a batch is {"tasks": [task, ...]}')
        return self.service.dispatch_tasks_as(_requests(items, batch), user, address=address)

    def get_task(self, user: str, task_id: object, *, address: str | None = None) -> dict[str, Any]:
        checked = check_task_id(task_id)
        authorize(self.db, user, Permission.VIEW_TASKS, action="task.view", target=checked, address=address)
        return self.service.describe_task(checked)

    def list_tasks(self, user: str, query: TaskQuery, *, address: str | None = None) -> dict[str, Any]:
        """A page of tasks in the console's orders. `total` is exact up to COUNT_CAP matches and
        null beyond; `next_offset` is null on the last page."""
        authorize(self.db, user, Permission.VIEW_TASKS, action="task.view", target=None, address=address)
        start, end = query.offset, query.offset + query.limit
        with self.db.session() as session:
            rows, total = list_tasks(session, query.filters, query.sort, start, end)
        more = len(rows) == query.limit and (total is None or end < total)
        return {
            "tasks": [task_summary(r) for r in rows],
            "total": total,
            "count_cap": COUNT_CAP,
            "offset": query.offset,
            "limit": query.limit,
            "next_offset": end if more else None,
        }

    def depths(self, user: str, *, address: str | None = None) -> dict[str, Any]:
        """Messages waiting per bucket and subject (the broker) and the database's counts."""
        authorize(self.db, user, Permission.VIEW_DASHBOARD, action="depths.view", target=None, address=address)
        broker = self.runtime.broker
        if broker is None:
            raise BrokerUnavailable(self.runtime.broker_error or "broker unavailable")
        depths = broker.run(broker_depths(broker.broker))
        depths["database"] = database_stats(self.db)
        return depths

    def upgrade(self, user: str, task_id: object, action: object, reason: object, *, address=None) -> UpgradeResult:
        action = action if isinstance(action, str) else ""  # a JSON number or object names no action
        return self.service.upgrade_task(task_id, action, reason, user, address=address)

    def cancel(self, user: str, task_id: object, *, address: str | None = None) -> None:
        self.service.cancel_task(task_id, user, address=address)

    def retry(self, user: str, task_id: object, *, address: str | None = None) -> None:
        self.service.retry_task(task_id, user, address=address)
