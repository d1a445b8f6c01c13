"""Read queries the console pages need (SQLAlchemy 2 Core selects, no ORM objects).

`list_tasks` feeds the Tasks page's AG Grid (infinite row model). It must page through a
million rows without loading them, so:

- it selects only the columns the grid shows (never args/result);
- every filter is an equality / IN / range on an indexed column (status+created_at,
  status+category+phase+bucket+queued_at, name, correlation_id, the primary key for id prefixes);
- the newest-first default order walks ix_tasks_created_at (or ix_tasks_status_created_at);
- the count is capped: it counts at most COUNT_CAP matching rows (an index walk that stops early)
  and reports None ("unknown": the grid's rowCount -1) beyond that. A short page gives the exact
  total for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, func, or_, select, union_all
from sqlalchemy.orm import Session

from db.models import Task

COUNT_CAP = 10_000
MAX_PAGE = 500
MAX_TEXT = 64

# Grid column id -> table column. Only these can be sorted on.
SORT_COLUMNS = {
    "created": Task.created_at,
    "priority": Task.priority,
    "status": Task.status,
    "name": Task.name,
    "category": Task.category,
    "phase": Task.phase,
    "bucket": Task.bucket,
    "attempts": Task.attempts,
    "id": Task.id,
}
DEFAULT_SORT = (("created", "desc"),)

LIST_COLUMNS = (
    Task.id,
    Task.name,
    Task.category,
    Task.phase,
    Task.priority,
    Task.bucket,
    Task.status,
    Task.attempts,
    Task.max_attempts,
    Task.correlation_id,
    Task.created_at,
)


@dataclass(frozen=True)
class TaskFilters:
    """What the filter controls above the grid hold. Empty means "any"."""

    statuses: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    text: str = ""

    @classmethod
    def from_inputs(cls, statuses=None, buckets=None, categories=None, phases=None, text=None) -> "TaskFilters":
        """From the (untrusted) values of the page's controls: lists of short strings and one text."""
        return cls(
            _strings(statuses),
            _strings(buckets),
            _strings(categories),
            _strings(phases),
            text.strip()[:MAX_TEXT] if isinstance(text, str) else "",
        )

    @property
    def empty(self) -> bool:
        return not (self.statuses or self.buckets or self.categories or self.phases or self.text)


def _strings(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        return ()
    return tuple(sorted({v for v in values if isinstance(v, str) and 0 < len(v) <= 32}))[:20]


def _prefix_range(column, prefix: str):
    """`column LIKE 'prefix%'` as a range, so a plain (binary) index can serve it on every backend."""
    return and_(column >= prefix, column < prefix + "\U0010ffff")


def task_conditions(filters: TaskFilters) -> list:
    conditions = []
    for column, values in (
        (Task.status, filters.statuses),
        (Task.bucket, filters.buckets),
        (Task.category, filters.categories),
        (Task.phase, filters.phases),
    ):
        if len(values) == 1:
            conditions.append(column == values[0])
        elif values:
            conditions.append(column.in_(values))
    if filters.text:
        text = filters.text
        conditions.append(
            or_(_prefix_range(Task.id, text.lower()), _prefix_range(Task.name, text), Task.correlation_id == text)
        )
    return conditions


def normalize_sort(sort: Iterable[Any] | None) -> list[tuple[str, str]]:
    """AG Grid's sortModel ([{"colId": ..., "sort": "asc"|"desc"}]) or (col, dir) pairs, checked."""
    result: list[tuple[str, str]] = []
    for item in sort or ():
        if isinstance(item, dict):
            col, direction = item.get("colId"), item.get("sort")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            col, direction = item
        else:
            continue
        if col in SORT_COLUMNS and direction in ("asc", "desc") and col not in {c for c, _ in result}:
            result.append((col, direction))
    return result[:3] or list(DEFAULT_SORT)


def _order_by(sort: Sequence[tuple[str, str]]) -> list:
    clauses = []
    for col, direction in sort:
        column = SORT_COLUMNS[col]
        clauses.append(column.desc() if direction == "desc" else column.asc())
    if sort[-1][0] != "id":
        # A unique tie-breaker keeps pages stable; it follows the last key's direction so an
        # index scan in either direction can serve it.
        clauses.append(Task.id.desc() if sort[-1][1] == "desc" else Task.id.asc())
    return clauses


def _merged_by_status(filters: TaskFilters, order: Sequence[tuple[str, str]], end: int):
    """Several statuses, newest first: one ix_tasks_status_created_at walk per status (each
    stops after `end` rows), merged. `status IN (...) ORDER BY created_at` would sort every match."""
    parts = []
    for status in filters.statuses:
        one = TaskFilters((status,), filters.buckets, filters.categories, filters.phases, filters.text)
        inner = select(*LIST_COLUMNS).where(*task_conditions(one)).order_by(*_order_by(order)).limit(end).subquery()
        parts.append(select(inner))
    merged = union_all(*parts).subquery()
    clauses = []
    for col, direction in list(order) + ([("id", order[-1][1])] if order[-1][0] != "id" else []):
        column = merged.c[SORT_COLUMNS[col].key]
        clauses.append(column.desc() if direction == "desc" else column.asc())
    return select(merged).order_by(*clauses)


def list_tasks(
    session: Session,
    filters: TaskFilters | None = None,
    sort: Iterable[Any] | None = None,
    start: int = 0,
    end: int = 100,
    *,
    count_cap: int = COUNT_CAP,
) -> tuple[list[dict[str, Any]], int | None]:
    """Rows start..end-1 of the filtered, sorted task list, and the total (None when unknown).

    The total is exact when the page is short (the end is in sight) or when at most
    `count_cap` rows match; beyond that it is None, and the grid keeps offering more rows.
    """
    filters = filters or TaskFilters()
    start = max(int(start or 0), 0)
    end = min(max(int(end or 0), start), start + MAX_PAGE)
    conditions = task_conditions(filters)
    order = normalize_sort(sort)
    if len(filters.statuses) > 1 and order[0][0] == "created":
        query = _merged_by_status(filters, order, end)
    else:
        query = select(*LIST_COLUMNS).where(*conditions).order_by(*_order_by(order))
    rows = [dict(r._mapping) for r in session.execute(query.offset(start).limit(end - start))] if end > start else []
    if end > start and len(rows) < end - start and (rows or start == 0):
        return rows, start + len(rows)
    return rows, count_tasks(session, filters, cap=count_cap)


def count_tasks(session: Session, filters: TaskFilters | None = None, *, cap: int = COUNT_CAP) -> int | None:
    """How many tasks match, if at most `cap` do; None beyond (the walk stops at cap + 1 rows)."""
    conditions = task_conditions(filters or TaskFilters())
    inner = select(Task.id).where(*conditions).limit(cap + 1).subquery()
    counted = session.execute(select(func.count()).select_from(inner)).scalar_one()
    return counted if counted <= cap else None


def tasks_with_correlation(session: Session, correlation_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """The tasks of one correlation id (one pipeline), oldest first."""
    query = (
        select(Task.id, Task.name, Task.category, Task.phase, Task.status, Task.priority, Task.created_at)
        .where(Task.correlation_id == correlation_id)
        .order_by(Task.created_at, Task.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in session.execute(query)]


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
