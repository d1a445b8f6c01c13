"""History analytics: what people did to tasks, every aggregate in SQL (GROUP BY), so the charts
cost about the same at 100,000 rows as at 100.

Two sources: upgrades are priority_history rows, which carry what the charts need from their
task (category, phase, queued_at, started_at), so only the table joins with tasks, with one
covering index per chart (db/models.py); cancels and retries are the audit log's successful
`cancel` and `retry` rows, joined with their task for its category and phase (there are few of
them next to upgrades, and ix_audit_log_sign_in_actor leads with the action). Each aggregate
runs once per source and the two are added up by the caller."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Sequence

from sqlalchemy import Select, case, func, literal, null, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db import dialect
from db.models import AuditLog as A
from db.models import PriorityHistory as H
from db.models import Task as T
from db.queries.audit import OK

# What people do to a task besides upgrading it, as the audit log names it.
AUDITED_ACTIONS = ("cancel", "retry")

# The columns of a history row as the table and the CSV export show it, in order.
ROW_COLUMNS = (
    "id",
    "changed_at",
    "task_id",
    "task_name",
    "category",
    "phase",
    "action",
    "from_priority",
    "to_priority",
    "from_bucket",
    "to_bucket",
    "changed_by",
    "reason",
    "queued_at",
    "started_at",
    "status",
)


@dataclass(frozen=True)
class HistoryFilter:
    """Aware UTC times: `start` inclusive, `end` exclusive. Empty values mean "any"."""

    start: datetime | None = None
    end: datetime | None = None
    action: str | None = None
    user: str | None = None
    category: str | None = None
    text: str | None = None


def _conditions(f: HistoryFilter) -> list[ColumnElement[bool]] | None:
    """The filter as conditions on priority_history alone (category is stored on the row);
    None when it asks for cancels or retries only."""
    if f.action in AUDITED_ACTIONS:
        return None
    conditions: list[ColumnElement[bool]] = []
    if f.start is not None:
        conditions.append(H.changed_at >= f.start)
    if f.end is not None:
        conditions.append(H.changed_at < f.end)
    if f.action:
        conditions.append(H.action == f.action)
    if f.user:
        conditions.append(H.changed_by == f.user)
    if f.category:
        conditions.append(H.category == f.category)
    if f.text:
        conditions.append(func.lower(H.reason).contains(f.text.lower(), autoescape=True))
    return conditions


def _audit_conditions(f: HistoryFilter) -> list[ColumnElement[bool]] | None:
    """The filter as conditions on the audit log joined with tasks; None when it asks for an
    upgrade action only."""
    if f.action and f.action not in AUDITED_ACTIONS:
        return None
    conditions: list[ColumnElement[bool]] = [
        A.action.in_([f.action] if f.action else AUDITED_ACTIONS),
        A.outcome == OK,
    ]
    if f.start is not None:
        conditions.append(A.at >= f.start)
    if f.end is not None:
        conditions.append(A.at < f.end)
    if f.user:
        conditions.append(A.actor == f.user)
    if f.category:
        conditions.append(T.category == f.category)
    if f.text:
        conditions.append(func.lower(A.detail).contains(f.text.lower(), autoescape=True))
    return conditions


def _audited(query, f: HistoryFilter):
    """`query` over the audit log's cancels and retries joined with their task, or None."""
    conditions = _audit_conditions(f)
    if conditions is None:
        return None
    return query.select_from(A).outerjoin(T, T.id == A.target).where(*conditions)


def _upgrades(query, f: HistoryFilter):
    """`query` over priority_history, or None."""
    conditions = _conditions(f)
    return None if conditions is None else query.where(*conditions)


def _both(session: Session, upgrades, audited) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for query in (upgrades, audited):
        if query is not None:
            rows += [tuple(row) for row in session.execute(query).all()]
    return rows


def time_range(session: Session, f: HistoryFilter) -> tuple[datetime | None, datetime | None]:
    """First and last change matching the filter (None, None when there is none)."""
    ends = _both(
        session,
        _upgrades(select(func.min(H.changed_at), func.max(H.changed_at)), f),
        _audited(select(func.min(A.at), func.max(A.at)), f),
    )
    firsts = [dialect.as_utc(first) for first, _ in ends if first]
    lasts = [dialect.as_utc(last) for _, last in ends if last]
    return (min(firsts) if firsts else None), (max(lasts) if lasts else None)


def changes_over_time(session: Session, f: HistoryFilter, unit: str) -> list[tuple[datetime, str, int]]:
    """(start of the hour or day, action, count), in time order. On SQLite the GROUP BY walks
    ix_priority_history_hour (or _day) instead of sorting every row."""
    sqlite = dialect.is_sqlite(session)
    upgrade_bucket = dialect.time_bucket(sqlite, H.changed_at, unit)
    audit_bucket = dialect.time_bucket(sqlite, A.at, unit)
    rows = _both(
        session,
        _upgrades(select(upgrade_bucket, H.action, func.count()).group_by(upgrade_bucket, H.action), f),
        _audited(select(audit_bucket, A.action, func.count()).group_by(audit_bucket, A.action), f),
    )
    points = [(dialect.bucket_start(at, unit), action, n) for at, action, n in rows]
    return sorted(points, key=lambda point: (point[0], point[1]))


def changes_by_user(session: Session, f: HistoryFilter) -> list[tuple[str, str, int]]:
    """(user, action, count)."""
    return _both(
        session,
        _upgrades(select(H.changed_by, H.action, func.count()).group_by(H.changed_by, H.action), f),
        _audited(select(A.actor, A.action, func.count()).group_by(A.actor, A.action), f),
    )


def changes_by_category_phase(session: Session, f: HistoryFilter) -> list[tuple[str | None, str | None, int]]:
    """(category, phase, count); None where a row has none (written by hand, or a task deleted)."""
    return _both(
        session,
        _upgrades(select(H.category, H.phase, func.count()).group_by(H.category, H.phase), f),
        _audited(select(T.category, T.phase, func.count()).group_by(T.category, T.phase), f),
    )


def wait_groups(session: Session, f: HistoryFilter, after: bool, limits: Sequence[float]) -> list[tuple]:
    """(action, bin or -1 when unknown, count, sum, max) for the wait before the upgrade
    (wait_before_s) or after it (wait_after_s). Bin i holds waits below limits[i]; the last bin
    everything above the last limit. Upgrades only: a cancel or a retry has no such waits.

    The two waits are two histograms, not one joint one: grouping by one bin at a time sorts far
    fewer distinct keys, and the caller runs both side by side."""
    seconds = H.wait_after_s if after else H.wait_before_s
    whens = [(seconds < limit, literal(i)) for i, limit in enumerate(limits)]
    bin_ = case((seconds.is_(None), literal(-1)), *whens, else_=literal(len(limits))).label("bin")
    query = select(H.action, bin_, func.count(), func.sum(seconds), func.max(seconds)).group_by(H.action, bin_)
    return _both(session, _upgrades(query, f), None)


def filter_options(session: Session) -> tuple[list[str], list[str]]:
    """Distinct users and categories that appear in the history."""
    users = set(session.scalars(select(H.changed_by).distinct()).all())
    users |= set(session.scalars(_audited(select(A.actor).distinct(), HistoryFilter())).all())
    categories = session.scalars(
        select(H.category).where(H.category.is_not(None)).distinct().order_by(H.category)
    ).all()
    return sorted(u for u in users if u), [c for c in categories if c is not None]


def count_rows(session: Session, f: HistoryFilter) -> int:
    counts = _both(session, _upgrades(select(func.count()).select_from(H), f), _audited(select(func.count()), f))
    return sum(int(n or 0) for (n,) in counts)


def _row_queries(f: HistoryFilter) -> list[Select]:
    """One query per source, each in ROW_COLUMNS order and newest first."""
    upgrades = _upgrades(
        select(
            H.id, H.changed_at, H.task_id, T.name, H.category, H.phase, H.action, H.from_priority, H.to_priority,
            H.from_bucket, H.to_bucket, H.changed_by, H.reason, H.queued_at, H.started_at, T.status,
        )
        .select_from(H)
        .outerjoin(T, T.id == H.task_id)
        .order_by(H.changed_at.desc(), H.id.desc()),
        f,
    )  # fmt: skip

    def nothing(name: str):
        return null().label(name)

    audited = _audited(
        select(
            A.id, A.at, A.target, T.name, T.category, T.phase, A.action,
            nothing("from_priority"), nothing("to_priority"), nothing("from_bucket"), nothing("to_bucket"),
            A.actor, A.detail, nothing("queued_at"), nothing("started_at"), T.status,
        ).order_by(A.at.desc(), A.id.desc()),
        f,
    )  # fmt: skip
    return [query for query in (upgrades, audited) if query is not None]


def _newest_first(results: list[Any]) -> Iterator[Any]:
    """Rows of both sources in one order: newest first (each source is already)."""
    return heapq.merge(*results, key=lambda row: (row[1], row[0]), reverse=True)


def history_rows(session: Session, f: HistoryFilter, limit: int, offset: int) -> list[tuple[Any, ...]]:
    """Rows in ROW_COLUMNS order, newest first."""
    results = [session.execute(query.limit(limit + offset)) for query in _row_queries(f)]
    return [tuple(row) for row in itertools.islice(_newest_first(results), offset, offset + limit)]


def stream_history_rows(session: Session, f: HistoryFilter, limit: int, batch: int) -> Iterator[list[tuple[Any, ...]]]:
    """history_rows in batches, without loading them all (for an export)."""
    results = [session.execute(query.limit(limit).execution_options(yield_per=batch)) for query in _row_queries(f)]
    rows = itertools.islice(_newest_first(results), limit)
    while chunk := [tuple(row) for row in itertools.islice(rows, batch)]:
        yield chunk
