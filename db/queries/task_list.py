"""The task list: the console's Tasks grid and the API's list (SQLAlchemy 2 Core selects).

`list_tasks` feeds the Tasks page's AG Grid (infinite row model). It must page through a
million rows without loading them (benchmarks/bench_console.py measures it at 1,000,000), so:

- it selects only the columns the grid shows (never args/result);
- every filter is an equality / IN / range that an index serves, and every sort order is an
  index order: a sort key, then created_at, then id, all in the last key's direction
  (ix_tasks_created_at, ix_tasks_status_created_at, ix_tasks_priority_created_at,
  ix_tasks_status_priority_created_at and ix_tasks_name all end in created_at, id). Columns
  without such an index (attempts, category, phase, bucket) are filtered on, not sorted on;
- a filter that is a union of alternatives (several statuses; the search text, which matches a
  correlation id, a name prefix or an id prefix) becomes one ordered, limited index walk per
  alternative, merged: `status IN (...) ORDER BY created_at` or an OR would sort every match;
- a name prefix is first expanded to the distinct names it covers (one index seek per name), so
  'etl.' becomes name IN ('etl.extract', 'etl.load', 'etl.transform'), each walked in order;
- an id part counts from ID_PART_MIN hex characters and matches anywhere in the id (a full id is
  an equality): the grid shows an id's end, since ids start with their creation time;
- the count is capped: it counts at most COUNT_CAP matching rows (index walks that stop early)
  and reports None ("unknown": the grid's rowCount -1) beyond that. A short page gives the exact
  total for free.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, func, literal, literal_column, or_, select, tuple_, union, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.models import Task

COUNT_CAP = 10_000
MAX_PAGE = 500
MAX_TEXT = 64
ID_PART_MIN = 4
MAX_NAMES = 20  # a name prefix covering more names than this is matched as one range
MAX_BRANCHES = 40

# Grid column id -> table column. Only these can be sorted on (each has an index that ends in
# created_at, id; see the module docstring).
SORT_COLUMNS = {
    "created": Task.created_at,
    "priority": Task.priority,
    "status": Task.status,
    "name": Task.name,
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
    Task.queued_at,
)
_HEX = re.compile(r"^[0-9a-f]+$")
_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True)
class TaskFilters:
    """What the filter controls above the grid hold. Empty means "any"."""

    statuses: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    text: str = ""
    # Only tasks created at or before this (the grid's anchor: rows do not move under the cursor
    # when new tasks arrive; they are counted instead).
    created_before: datetime | None = None

    @classmethod
    def from_inputs(
        cls, statuses=None, buckets=None, categories=None, phases=None, text=None, created_before=None
    ) -> "TaskFilters":
        """From the (untrusted) values of the page's controls: lists of short strings, one text and
        an ISO time."""
        return cls(
            _strings(statuses),
            _strings(buckets),
            _strings(categories),
            _strings(phases),
            text.strip()[:MAX_TEXT] if isinstance(text, str) else "",
            _time(created_before),
        )

    def newer(self) -> "TaskFilters":
        """The same filters for the tasks created after the anchor (the "N new tasks" count)."""
        return replace(self, created_before=None)

    @property
    def empty(self) -> bool:
        return not (self.statuses or self.buckets or self.categories or self.phases or self.text)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _strings(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        return ()
    return tuple(sorted({v for v in values if isinstance(v, str) and 0 < len(v) <= 32}))[:20]


def _prefix_end(prefix: str) -> str:
    return prefix + "\U0010ffff"


def _prefix_range(column, prefix: str):
    """`column LIKE 'prefix%'` as a range, so a plain (binary) index can serve it on every backend."""
    return and_(column >= prefix, column < _prefix_end(prefix))


def _value(value: str):
    """A filter value written into the SQL when it is a plain word (statuses, buckets, categories,
    phases and task names are): with bound parameters, PostgreSQL switches a statement psycopg
    has prepared to a generic plan on its 11th run, and a generic plan cannot tell 400 running
    tasks from 900,000 succeeded ones, nor LIMIT 100 from LIMIT 10,001 (a capped count went from
    25 to 150-190 ms). Anything else stays a parameter (it matches no status, bucket, category,
    phase or name)."""
    return literal(value, literal_execute=True) if _WORD.match(value) else value


def _n(number: int):
    """A LIMIT or OFFSET written into the SQL, for the same reason."""
    return literal(int(number), literal_execute=True)


def _equal_or_in(column, values: Sequence[str]):
    return column == _value(values[0]) if len(values) == 1 else column.in_([_value(v) for v in values])


def _names_with_prefix(session: Session, prefix: str) -> list[str] | None:
    """The distinct names starting with `prefix`, one index seek each; None if more than MAX_NAMES."""
    names: list[str] = []
    end = _prefix_end(prefix)
    current = session.scalar(select(func.min(Task.name)).where(Task.name >= prefix, Task.name < end))
    while current is not None:
        if len(names) == MAX_NAMES:
            return None
        names.append(current)
        current = session.scalar(select(func.min(Task.name)).where(Task.name > current, Task.name < end))
    return names


def _text_alternatives(session: Session, text: str) -> list:
    """What the search box matches: a correlation id, a name prefix, an id prefix."""
    alternatives = [Task.correlation_id == text]
    names = _names_with_prefix(session, text)
    if names is None:
        alternatives.append(_prefix_range(Task.name, text))
    else:
        alternatives += [Task.name == _value(name) for name in names]
    lowered = text.lower()
    if len(lowered) >= 32 and _HEX.match(lowered):
        alternatives.append(Task.id == lowered)
    elif len(lowered) >= ID_PART_MIN and _HEX.match(lowered):
        # Anywhere in the id: the grid shows its end (its beginning is the creation time, the
        # same on every row of a day). A walk over the id index; bounded by the read time limit.
        alternatives.append(Task.id.contains(lowered, autoescape=True))
    return alternatives


def _branches(session: Session, filters: TaskFilters) -> tuple[list[list], bool]:
    """The filter as a union of branches, each a list of conditions one index walk serves.

    Returns (branches, disjoint): status branches never overlap, search-text ones may."""
    common: list = [] if filters.created_before is None else [Task.created_at <= filters.created_before]
    for column, values in (
        (Task.bucket, filters.buckets),
        (Task.category, filters.categories),
        (Task.phase, filters.phases),
    ):
        if values:
            common.append(_equal_or_in(column, values))
    statuses = [[Task.status == _value(s)] for s in filters.statuses] or [[]]
    texts = [[a] for a in _text_alternatives(session, filters.text)] if filters.text else [[]]
    if len(statuses) * len(texts) > MAX_BRANCHES:
        statuses = [[_equal_or_in(Task.status, filters.statuses)]]
    branches = [common + s + t for s, t in itertools.product(statuses, texts)]
    return branches, len(texts) == 1


def normalize_sort(sort: Iterable[Any] | None) -> list[tuple[str, str]]:
    """AG Grid's sortModel ([{"colId": ..., "sort": "asc"|"desc"}]) or (col, dir) pairs, checked."""
    result: list[tuple[str, str]] = []
    for item in sort if isinstance(sort, (list, tuple)) else ():
        if isinstance(item, dict):
            col, direction = item.get("colId"), item.get("sort")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            col, direction = item
        else:
            continue
        if not isinstance(col, str) or not isinstance(direction, str):
            continue
        if col in SORT_COLUMNS and direction in ("asc", "desc") and col not in {c for c, _ in result}:
            result.append((col, direction))
    return result[:3] or list(DEFAULT_SORT)


def _full_order(sort: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The sort keys, then created_at and id as tie-breakers in the last key's direction: the
    order of the index that serves the first key, and a stable one (id is unique)."""
    order = list(sort)
    keys = {col for col, _ in order}
    if "id" not in keys:
        if "created" not in keys:
            order.append(("created", order[-1][1]))
        order.append(("id", order[-1][1]))
    return order


def _clauses(order: Sequence[tuple[str, str]], columns) -> list:
    clauses = []
    for col, direction in order:
        column = columns(col)
        clauses.append(column.desc() if direction == "desc" else column.asc())
    return clauses


def _after(order: Sequence[tuple[str, str]], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows that come after `values` (the sort keys of a page's last row) in this order: the
    keyset condition of a cursor, so a deep page costs what the first page costs."""
    columns = [SORT_COLUMNS[col] for col, _ in order]
    directions = {direction for _, direction in order}
    if len(directions) == 1:  # one direction: a row-value comparison an index walk serves
        keys, after = tuple_(*columns), tuple_(*(literal(v, type_=c.type) for c, v in zip(columns, values)))
        return keys < after if directions == {"desc"} else keys > after
    alternatives = []
    for i, ((_, direction), column, value) in enumerate(zip(order, columns, values)):
        earlier = [c == v for c, v in zip(columns[:i], values[:i])]
        alternatives.append(and_(*earlier, column < value if direction == "desc" else column > value))
    return or_(*alternatives)


def page_keys(sort: Iterable[Any] | None) -> list[tuple[str, str]]:
    """The full order a page is sorted in (the sort asked for, then created and id): what a
    cursor holds the values of."""
    return _full_order(normalize_sort(sort))


def _page_query(branches: list[list], disjoint: bool, order: list[tuple[str, str]], start: int, end: int):
    own = _clauses(order, lambda col: SORT_COLUMNS[col])
    if len(branches) == 1:
        return select(*LIST_COLUMNS).where(*branches[0]).order_by(*own).offset(_n(start)).limit(_n(end - start))
    # Merge only the sort keys (each branch is then an index-only walk), pick the page, and
    # fetch just its rows.
    keys = [SORT_COLUMNS[col] for col, _ in order]
    parts = [select(*keys).where(*conds).order_by(*own).limit(_n(end)).subquery() for conds in branches]
    merged = (union_all if disjoint else union)(*(select(part) for part in parts)).subquery()
    page = (
        select(merged.c.id)
        .order_by(*_clauses(order, lambda col: merged.c[SORT_COLUMNS[col].key]))
        .offset(_n(start))
        .limit(_n(end - start))
        .subquery()
    )
    return select(*LIST_COLUMNS).join(page, page.c.id == Task.id).order_by(*own)


def list_tasks(
    session: Session,
    filters: TaskFilters | None = None,
    sort: Iterable[Any] | None = None,
    start: int = 0,
    end: int = 100,
    *,
    count_cap: int = COUNT_CAP,
    after: Sequence[Any] | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Rows start..end-1 of the filtered, sorted task list, and the total (None when unknown).
    With `after` (the page_keys values of the previous page's last row), the rows after it
    instead: `end - start` of them, whatever `start` says.

    The total is exact when the page is short (the end is in sight) or when at most
    `count_cap` rows match; beyond that it is None, and the grid keeps offering more rows.
    """
    filters = filters or TaskFilters()
    start = max(int(start or 0), 0)
    end = min(max(int(end or 0), start), start + MAX_PAGE)
    branches, disjoint = _branches(session, filters)
    order = page_keys(sort)
    if after is not None:
        keyset = _after(order, after)
        branches = [conditions + [keyset] for conditions in branches]
        start, end = 0, end - start
    rows = []
    if end > start:
        query = _page_query(branches, disjoint, order, start, end)
        rows = [dict(r._mapping) for r in session.execute(query)]
    if after is None and end > start and len(rows) < end - start and (rows or start == 0):
        return rows, start + len(rows)
    if after is not None:
        branches, disjoint = _branches(session, filters)
    return rows, _count(session, branches, disjoint, count_cap)


def _count(session: Session, branches: list[list], disjoint: bool, cap: int) -> int | None:
    def capped(conds, column):
        return select(column).select_from(Task).where(*conds).limit(_n(cap + 1)).subquery()

    if disjoint:  # one walk per branch that stops after cap + 1 rows; any covering index will do
        counts = [select(func.count()).select_from(capped(conds, literal_column("1"))) for conds in branches]
        total: ColumnElement[Any] = counts[0].scalar_subquery()
        for more in counts[1:]:
            total = total + more.scalar_subquery()
        counted = session.execute(select(total)).scalar_one()
    else:  # the search text's alternatives may overlap: count distinct ids
        inner = union(*(select(capped(conds, Task.id)) for conds in branches)).subquery()
        counted = session.execute(select(func.count()).select_from(inner)).scalar_one()
    return counted if counted <= cap else None


def count_tasks(
    session: Session, filters: TaskFilters | None = None, *, cap: int = COUNT_CAP, created_after: datetime | None = None
) -> int | None:
    """How many tasks match (created after `created_after`, if given), if at most `cap` do; None
    beyond (the walks stop at cap + 1 rows each)."""
    branches, disjoint = _branches(session, filters or TaskFilters())
    if created_after is not None:
        branches = [conditions + [Task.created_at > created_after] for conditions in branches]
    return _count(session, branches, disjoint, cap)
