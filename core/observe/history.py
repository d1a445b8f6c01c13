"""History analytics for the History page and its CSV export: what people did to tasks, the
upgrades from priority_history and the cancels and retries from the audit log.

The aggregates are SQL (db.queries.history); this module checks the filter, picks the chart's
time unit, runs the page's queries side by side and shapes what they return. Times are UTC:
filters take aware datetimes; `start` is inclusive, `end` exclusive.

Waits, in seconds, for each upgrade, both stored on the history row:
- before (wait_before_s): changed_at - queued_at, how long the task had waited when someone
  upgraded it (written with the row);
- after (wait_after_s): started_at - changed_at, how long it still waited once upgraded
  (written by a trigger when the task starts, see db/models.py).
Rows where a wait is unknown (not started yet, or a row written by hand) are left out of it;
cancels and retries have no waits.

The page needs VIEW_HISTORY; routing and the page's callbacks check it. Nothing here writes.
"""

from __future__ import annotations

import csv
import io
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterator

from core.errors import InvalidInput
from core.priority import UpgradeAction
from core.timefmt import UTC, iso, zone
from db.engine import Database
from db.queries import history as queries
from db.queries.history import AUDITED_ACTIONS, HistoryFilter
from db.queries.history import ROW_COLUMNS as CSV_COLUMNS

__all__ = ["ACTIONS", "CSV_COLUMNS", "HistoryFilter"]

# Everything the page counts: the three upgrades, then what the audit log adds.
ACTIONS: tuple[str, ...] = tuple(a.value for a in UpgradeAction) + AUDITED_ACTIONS

TABLE_LIMIT = 1000  # rows the page's table shows (newest first)
EXPORT_LIMIT = 250_000  # rows a CSV export may hold (it is built in the web process's memory)
HOURLY_MAX_SPAN = timedelta(days=7)  # up to this range the time chart is per hour, above it per day

# Histogram bins for the wait chart: (label, upper bound in seconds, exclusive).
WAIT_BINS: tuple[tuple[str, float], ...] = (
    ("< 10 s", 10),
    ("10-60 s", 60),
    ("1-5 min", 300),
    ("5-15 min", 900),
    ("15-60 min", 3600),
    ("1-4 h", 14_400),
    ("> 4 h", float("inf")),
)
_LIMITS = [limit for _, limit in WAIT_BINS[:-1]]


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a date and time")
    if value.tzinfo is None:
        raise InvalidInput(f"{what} must carry a time zone (UTC)")
    return value.astimezone(timezone.utc)


def _checked(f: HistoryFilter) -> HistoryFilter:
    return replace(f, start=_aware(f.start, "start"), end=_aware(f.end, "end"))


def _day(value: object, what: str) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise InvalidInput(f"{what} must be a date like 2025-01-31, not {str(value)[:32]!r}") from None


def make_filter(
    start_date: object = None,
    end_date: object = None,
    action: object = None,
    user: object = None,
    category: object = None,
    text: object = None,
    zone_name: str = UTC,
) -> HistoryFilter:
    """A filter from what a form sends: dates (YYYY-MM-DD, end day included, days of the user's
    time zone) and optional strings."""
    first, last = _day(start_date, "the start date"), _day(end_date, "the end date")
    if first and last and last < first:
        raise InvalidInput("the end date is before the start date")
    if last is not None and last >= date.max:
        raise InvalidInput("the end date must be before 9999-12-31")

    def text_or_none(value: object, what: str, limit: int) -> str | None:
        if value in (None, ""):
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidInput(f"{what} must be text of at most {limit} characters")
        return value.strip() or None

    return HistoryFilter(
        start=_midnight(first, zone_name),
        end=_midnight(last + timedelta(days=1), zone_name) if last else None,
        action=_action(action),
        user=text_or_none(user, "the user", 64),
        category=text_or_none(category, "the category", 32),
        text=text_or_none(text, "the search text", 200),
    )


def _midnight(day: date | None, zone_name: str) -> datetime | None:
    if day is None:
        return None
    try:
        return datetime.combine(day, time(), zone(zone_name)).astimezone(timezone.utc)
    except OverflowError:
        raise InvalidInput(f"{day.isoformat()} is out of range") from None


def _action(value: object) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and value.strip().lower() in ACTIONS:
        return value.strip().lower()
    raise InvalidInput(f"the action is one of {', '.join(ACTIONS)}, not {str(value)[:32]!r}")


# -- the charts ---------------------------------------------------------------------------------


def time_range(db: Database, f: HistoryFilter) -> tuple[datetime | None, datetime | None]:
    """First and last change matching the filter (None, None when there is none)."""
    with db.reading() as session:
        return queries.time_range(session, _checked(f))


def granularity(db: Database, f: HistoryFilter) -> str:
    """'hour' for ranges up to HOURLY_MAX_SPAN, else 'day'. Open ends take the data's extent."""
    start, end = _aware(f.start, "start"), _aware(f.end, "end")
    if start is None or end is None:
        first, last = time_range(db, f)
        start = start or first
        end = end or (last + timedelta(seconds=1) if last else None)
    if start is None or end is None:
        return "hour"
    return "hour" if end - start <= HOURLY_MAX_SPAN else "day"


def changes_over_time(db: Database, f: HistoryFilter, unit: str | None = None) -> dict[str, Any]:
    """{'unit': 'hour'|'day', 'points': [{'at': aware datetime, 'action': str, 'count': int}]}"""
    unit = unit or granularity(db, f)
    if unit not in ("hour", "day"):
        raise InvalidInput("the time unit is hour or day")
    with db.reading() as session:
        rows = queries.changes_over_time(session, _checked(f), unit)
    return {"unit": unit, "points": [{"at": at, "action": action, "count": n} for at, action, n in rows]}


def changes_by_user(db: Database, f: HistoryFilter) -> list[dict[str, Any]]:
    """[{'user', 'action', 'count'}], users with the most changes first."""
    with db.reading() as session:
        rows = queries.changes_by_user(session, _checked(f))
    totals: dict[str, int] = {}
    for user, _action, n in rows:
        totals[user] = totals.get(user, 0) + n
    rows = sorted(rows, key=lambda r: (-totals[r[0]], r[0], r[1]))
    return [{"user": user, "action": action, "count": n} for user, action, n in rows]


def changes_by_category_phase(db: Database, f: HistoryFilter) -> list[dict[str, Any]]:
    """[{'category', 'phase', 'count'}]; a row without them (written by hand, or its task gone)
    counts as '(unknown)'."""
    with db.reading() as session:
        rows = queries.changes_by_category_phase(session, _checked(f))
    unknown = "(unknown)"
    counts: dict[tuple[str, str], int] = {}
    for category, phase, n in rows:
        key = (category or unknown, phase or unknown)
        counts[key] = counts.get(key, 0) + n
    return [{"category": c, "phase": p, "count": n} for (c, p), n in sorted(counts.items())]


def queue_wait(db: Database, f: HistoryFilter) -> dict[str, Any]:
    """Queue wait of upgraded tasks before and after the upgrade.

    {'summary': [{'action', 'upgrades', 'before_n', 'before_avg_s', 'before_max_s',
                  'after_n', 'after_avg_s', 'after_max_s'}],
     'bins': [{'bin', 'before', 'after'}]}   (counts per WAIT_BINS bin, every bin present)
    """
    return _queue_wait(_wait_groups(db, f, after=False), _wait_groups(db, f, after=True))


def _wait_groups(db: Database, f: HistoryFilter, *, after: bool) -> list[tuple]:
    with db.reading() as session:
        return queries.wait_groups(session, _checked(f), after, _LIMITS)


def _queue_wait(before: list[tuple], after: list[tuple]) -> dict[str, Any]:
    summary: dict[str, dict[str, Any]] = {}
    bins = {"before": [0] * len(WAIT_BINS), "after": [0] * len(WAIT_BINS)}
    for side, groups in (("before", before), ("after", after)):
        for action, bin_, n, total, largest in groups:
            row = summary.setdefault(
                action,
                {"action": action, "upgrades": 0, "before_n": 0, "before_sum": 0.0, "before_max_s": None,
                 "after_n": 0, "after_sum": 0.0, "after_max_s": None},
            )  # fmt: skip
            if side == "before":
                row["upgrades"] += n  # every row is in exactly one 'before' group
            if bin_ >= 0:
                bins[side][bin_] += n
                row[f"{side}_n"] += n
                row[f"{side}_sum"] += float(total)
                row[f"{side}_max_s"] = max(float(largest), row[f"{side}_max_s"] or 0.0)

    def num(value) -> float | None:
        return None if value is None else round(float(value), 3)

    result = []
    for action in sorted(summary):
        row = summary[action]
        result.append(
            {
                "action": action,
                "upgrades": row["upgrades"],
                "before_n": row["before_n"],
                "before_avg_s": num(row["before_sum"] / row["before_n"]) if row["before_n"] else None,
                "before_max_s": num(row["before_max_s"]),
                "after_n": row["after_n"],
                "after_avg_s": num(row["after_sum"] / row["after_n"]) if row["after_n"] else None,
                "after_max_s": num(row["after_max_s"]),
            }
        )
    return {
        "summary": result,
        "bins": [
            {"bin": label, "before": bins["before"][i], "after": bins["after"][i]}
            for i, (label, _) in enumerate(WAIT_BINS)
        ],
    }


# The page's queries are independent reads: run side by side (each on its own connection;
# both drivers release the GIL while the database works), the page takes as long as the
# slowest one instead of their sum. Four threads per database, shared by every page on it
# (held with the database: a process has one, a test suite many).
_POOLS: weakref.WeakKeyDictionary[Database, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


def _pool(db: Database) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(db)
        if pool is None:
            pool = _POOLS[db] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="history-query")
        return pool


def page(db: Database, f: HistoryFilter, *, table_limit: int = TABLE_LIMIT) -> dict[str, Any]:
    """Everything the history page shows for one filter: {'over_time', 'by_user',
    'by_category', 'wait', 'table'}, as the functions above return them."""
    f = _checked(f)
    pool = _pool(db)
    jobs: dict[str, Future[Any]] = {  # the slowest first, so they start at once
        "wait_before": pool.submit(_wait_groups, db, f, after=False),
        "wait_after": pool.submit(_wait_groups, db, f, after=True),
        "over_time": pool.submit(changes_over_time, db, f),
        "table": pool.submit(history_rows, db, f, limit=table_limit),
        "by_user": pool.submit(changes_by_user, db, f),
        "by_category": pool.submit(changes_by_category_phase, db, f),
    }
    done = {name: job.result() for name, job in jobs.items()}
    done["wait"] = _queue_wait(done.pop("wait_before"), done.pop("wait_after"))
    return done


def filter_options(db: Database) -> dict[str, list[str]]:
    """Distinct users and categories that appear in the history (for the filter dropdowns)."""
    with db.reading() as session:
        users, categories = queries.filter_options(session)
    return {"users": users, "categories": categories}


# -- the table and the export ------------------------------------------------------------------


def count_rows(db: Database, f: HistoryFilter) -> int:
    with db.reading() as session:
        return queries.count_rows(session, _checked(f))


def history_rows(db: Database, f: HistoryFilter, *, limit: int = TABLE_LIMIT, offset: int = 0) -> dict[str, Any]:
    """{'total': matching rows, 'rows': [dict per CSV_COLUMNS]} newest first, `limit` from `offset`."""
    if not isinstance(limit, int) or not 0 < limit <= 10_000:
        raise InvalidInput("a page holds 1 to 10,000 rows")
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput("the offset is a whole number from 0")
    f = _checked(f)
    with db.reading() as session:
        rows = queries.history_rows(session, f, limit, offset)
    return {"total": count_rows(db, f), "rows": [_as_dict(row) for row in rows]}


def _as_dict(row: tuple) -> dict[str, Any]:
    values = dict(zip(CSV_COLUMNS, row))
    for key in ("changed_at", "queued_at", "started_at"):
        values[key] = iso(values[key].astimezone(timezone.utc)) if values[key] else None
    return values


def _spreadsheet_safe(value: Any) -> Any:
    """Reasons are typed by people: keep a spreadsheet from reading '=...' as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def iter_csv(db: Database, f: HistoryFilter, *, limit: int = EXPORT_LIMIT, batch: int = 5000) -> Iterator[str]:
    """The filtered rows as CSV text, header first, newest first, in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    with db.session() as session:
        for rows in queries.stream_history_rows(session, _checked(f), limit, batch):
            for row in rows:
                writer.writerow([_spreadsheet_safe(v) for v in _as_dict(row).values()])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def export_csv(db: Database, f: HistoryFilter, *, limit: int = EXPORT_LIMIT) -> str:
    return "".join(iter_csv(db, f, limit=limit))
