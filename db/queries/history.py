"""Priority-history analytics: every aggregate in SQL (GROUP BY), so the charts cost about the
same at 100,000 history rows as at 100. Each history row carries what the charts need from its
task (category, phase, queued_at, started_at), so only the table (the task's name and status)
joins with tasks. One covering index per chart (db/models.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Sequence

from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db import dialect
from db.models import PriorityHistory as H
from db.models import Task as T

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


def _conditions(f: HistoryFilter) -> list[ColumnElement[bool]]:
    """The filter as conditions on priority_history alone (category is stored on the row)."""
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


def time_range(session: Session, f: HistoryFilter) -> tuple[datetime | None, datetime | None]:
    """First and last change matching the filter (None, None when there is none)."""
    first, last = session.execute(select(func.min(H.changed_at), func.max(H.changed_at)).where(*_conditions(f))).one()
    return (dialect.as_utc(first) if first else None), (dialect.as_utc(last) if last else None)


def upgrades_over_time(session: Session, f: HistoryFilter, unit: str) -> list[tuple[datetime, str, int]]:
    """(start of the hour or day, action, count), in time order. On SQLite the GROUP BY walks
    ix_priority_history_hour (or _day) instead of sorting every row."""
    bucket = dialect.time_bucket(dialect.is_sqlite(session), H.changed_at, unit).label("at")
    query = select(bucket, H.action, func.count().label("n")).where(*_conditions(f)).group_by(bucket, H.action)
    rows = session.execute(query.order_by(bucket, H.action)).all()
    return [(dialect.bucket_start(at, unit), action, n) for at, action, n in rows]


def upgrades_by_user(session: Session, f: HistoryFilter) -> list[tuple[str, str, int]]:
    """(user, action, count)."""
    query = (
        select(H.changed_by, H.action, func.count().label("n")).where(*_conditions(f)).group_by(H.changed_by, H.action)
    )
    return [(user, action, n) for user, action, n in session.execute(query).all()]


def upgrades_by_category_phase(session: Session, f: HistoryFilter) -> list[tuple[str | None, str | None, int]]:
    """(category, phase, count); None where a row has none (written by hand)."""
    query = select(H.category, H.phase, func.count()).where(*_conditions(f)).group_by(H.category, H.phase)
    return [(category, phase, n) for category, phase, n in session.execute(query).all()]


def wait_groups(session: Session, f: HistoryFilter, after: bool, limits: Sequence[float]) -> list[tuple]:
    """(action, bin or -1 when unknown, count, sum, max) for the wait before the upgrade
    (wait_before_s) or after it (wait_after_s). Bin i holds waits below limits[i]; the last bin
    everything above the last limit.

    The two waits are two histograms, not one joint one: grouping by one bin at a time sorts far
    fewer distinct keys, and the caller runs both side by side."""
    seconds = H.wait_after_s if after else H.wait_before_s
    whens = [(seconds < limit, literal(i)) for i, limit in enumerate(limits)]
    bin_ = case((seconds.is_(None), literal(-1)), *whens, else_=literal(len(limits))).label("bin")
    query = (
        select(H.action, bin_, func.count(), func.sum(seconds), func.max(seconds))
        .where(*_conditions(f))
        .group_by(H.action, bin_)
    )
    return [tuple(row) for row in session.execute(query)]


def filter_options(session: Session) -> tuple[list[str], list[str]]:
    """Distinct users and categories that appear in the history."""
    users = session.scalars(select(H.changed_by).distinct().order_by(H.changed_by)).all()
    categories = session.scalars(
        select(H.category).where(H.category.is_not(None)).distinct().order_by(H.category)
    ).all()
    return list(users), [c for c in categories if c is not None]


def count_rows(session: Session, f: HistoryFilter) -> int:
    return int(session.scalar(select(func.count()).select_from(H).where(*_conditions(f))) or 0)


def _rows_query(f: HistoryFilter):
    columns = (
        H.id,
        H.changed_at,
        H.task_id,
        T.name,
        H.category,
        H.phase,
        H.action,
        H.from_priority,
        H.to_priority,
        H.from_bucket,
        H.to_bucket,
        H.changed_by,
        H.reason,
        H.queued_at,
        H.started_at,
        T.status,
    )
    return (
        select(*columns)
        .select_from(H)
        .outerjoin(T, T.id == H.task_id)
        .where(*_conditions(f))
        .order_by(H.changed_at.desc(), H.id.desc())
    )


def history_rows(session: Session, f: HistoryFilter, limit: int, offset: int) -> list[tuple[Any, ...]]:
    """Rows in ROW_COLUMNS order, newest first."""
    return [tuple(row) for row in session.execute(_rows_query(f).limit(limit).offset(offset)).all()]


def stream_history_rows(session: Session, f: HistoryFilter, limit: int, batch: int) -> Iterator[list[tuple[Any, ...]]]:
    """history_rows in batches, without loading them all (for an export)."""
    result = session.execute(_rows_query(f).limit(limit).execution_options(yield_per=batch))
    for rows in result.partitions(batch):
        yield [tuple(row) for row in rows]
