"""Console speed at scale: the Tasks grid, the Overview, the History charts and the web
process's memory, over 1,000,000 tasks and 100,000 priority_history rows.

    .venv/bin/python benchmarks/bench_console.py [--tasks 1000000] [--history 100000] [--samples 40] [--check]

Ours is the code the page callbacks run (dashboard.pages.tasks.fetch_rows, the overview
callback's figure building from core.snapshot, the core.history functions of the history
callback). The raw baseline is the same result computed with hand-written SQL executed straight
through the DB-API driver (sqlite3 / psycopg), in the same run, interleaved with ours.
Targets (issue 3): tasks page p95 <= 150 ms, overview refresh p95 <= 50 ms, history charts
p95 <= 300 ms, web process RSS <= 300 MB.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import _common  # noqa: F401  (puts the project on sys.path)
from _common import ROOT, BenchEnv, Row, finish, parser, percentile
from dash._utils import to_json
from sqlalchemy import select, text

from core.auth.permissions import ROLE_PERMISSIONS, Role
from core.auth.tokens import system_create_token
from core.auth.users import create_user
from core.observe import history as core_history
from core.observe.snapshot import OverviewSnapshot
from core.priority import DEFAULT_CATEGORIES, priority_to_bucket
from core.runtime import Runtime, prepare_database
from dashboard.auth import ConsoleUser
from dashboard.pages import history as history_page
from dashboard.pages import overview as overview_page
from dashboard.pages import tasks as tasks_page
from db.engine import Database
from db.models import PriorityHistory, Task
from db.queries.task_list import TaskFilters

TASKS_P95_MS = 150.0
OVERVIEW_P95_MS = 50.0
HISTORY_P95_MS = 300.0
RSS_MB = 300.0
SNAPSHOT_SANE_MS = 1000.0  # the snapshot is recomputed every 2 s in the background: it must fit well inside

DAYS = 56  # created_at spread over eight weeks
RECENT_SHARE = 0.05  # this share of the tasks arrived in the last two hours (heavy current traffic)
CHUNK = 20_000


# -- the data ------------------------------------------------------------------------------------

CATEGORY_WEIGHTS = {"etl": 40, "webapp": 30, "report": 20, "alert": 10}
PHASE_WEIGHTS = {
    "etl": {"extract": 32, "transform": 32, "load": 32, "default": 4},
    "webapp": {"default": 85, "extract": 5, "transform": 5, "load": 5},
    "report": {"default": 70, "extract": 10, "transform": 10, "load": 10},
    "alert": {"default": 94, "extract": 2, "transform": 2, "load": 2},
}
NAMES = {
    "etl": ["etl.extract", "etl.transform", "etl.load"],
    "webapp": ["webapp.send_email", "webapp.resize_image", "webapp.sync_account", "webapp.cleanup"],
    "report": ["report.daily", "report.weekly", "report.invoice"],
    "alert": ["alert.page", "alert.digest"],
}
PRIORITY_WEIGHTS = [2, 3, 5, 10, 10, 40, 10, 8, 6, 4, 2]  # 0..10, Normal (5) the most common
USERS = ["otto", "mona", "ada"] + [f"op{i:02d}" for i in range(1, 18)]
USER_WEIGHTS = [30, 20, 8] + [max(1, 18 - i) for i in range(1, 18)]
REASONS = [
    "customer escalation",
    "board meeting at 9",
    "SLA breach imminent",
    "blocking the nightly load",
    "incident INC-4711",
    "finance close",
    "requested by support",
    "partner demo",
]


def _cumulative(weights) -> list[float]:
    return list(itertools.accumulate(weights))


@dataclass
class Seeded:
    tasks: int
    history: int
    statuses: dict[str, int]
    seconds: float
    now: datetime


TASK_COLUMNS = (
    "id", "name", "category", "phase", "priority", "bucket", "status", "args", "result", "error",
    "correlation_id", "created_by", "generation", "published_generation", "stream_seq", "publish_due_at",
    "attempts", "max_attempts", "lease_token", "lease_expires_at", "worker_id",
    "created_at", "queued_at", "started_at", "finished_at",
)  # fmt: skip
HISTORY_COLUMNS = (
    "task_id", "changed_at", "from_priority", "to_priority", "from_bucket", "to_bucket", "action", "reason",
    "changed_by", "category", "phase", "queued_at", "started_at", "wait_before_s", "wait_after_s",
)  # fmt: skip
BUCKET_OF = [priority_to_bucket(p).value for p in range(11)]
TARGETS = {"prioritize": 8, "urgent": 9, "critical": 10}


def _task_chunks(n_tasks: int, n_history: int, seed: int, now: datetime, sqlite: bool):
    """Yield (task rows, history rows) as DB-API tuples in TASK_COLUMNS / HISTORY_COLUMNS order,
    tasks in creation order (ids ascending). Times are naive UTC, on SQLite as the text SQLAlchemy
    writes ('YYYY-MM-DD HH:MM:SS.ffffff'); JSON as text. seed() reads a row back through the models."""
    rng = random.Random(seed)
    base = now.replace(tzinfo=None)
    if sqlite:

        def stamp(value: datetime | None):
            return None if value is None else value.isoformat(sep=" ", timespec="microseconds")
    else:

        def stamp(value: datetime | None):
            return value

    categories = list(DEFAULT_CATEGORIES)
    cat_cum = _cumulative(CATEGORY_WEIGHTS[c] for c in categories)
    phase_lists = {c: list(PHASE_WEIGHTS[c]) for c in categories}
    phase_cums = {c: _cumulative(PHASE_WEIGHTS[c].values()) for c in categories}
    prio_cum = _cumulative(PRIORITY_WEIGHTS)
    low_prio_cum = _cumulative(PRIORITY_WEIGHTS[:8])  # an upgraded task started below 8
    user_cum = _cumulative(USER_WEIGHTS)
    lease_until = stamp(base + timedelta(seconds=30))

    # Ages (seconds before now), oldest first.
    span = DAYS * 86400.0
    recent = int(n_tasks * RECENT_SHARE)
    ages = [rng.random() * span for _ in range(n_tasks - recent)] + [rng.random() * 7200.0 for _ in range(recent)]
    ages.sort(reverse=True)

    # Which tasks were upgraded; `doubles` of them twice (prioritize, then urgent).
    doubles = min(n_history // 40, n_history // 2)
    upgraded = rng.sample(range(n_tasks), min(n_history - doubles, n_tasks))
    twice = set(upgraded[:doubles])
    upgraded = set(upgraded)

    epoch_ms = int(now.timestamp() * 1000)
    tasks: list[tuple] = []
    history: list[tuple] = []
    correlation = None
    for i, age in enumerate(ages):
        created = base - timedelta(seconds=age)
        category = categories[bisect.bisect(cat_cum, rng.random() * cat_cum[-1])]
        phase = phase_lists[category][bisect.bisect(phase_cums[category], rng.random() * phase_cums[category][-1])]
        if category == "etl" and phase != "default":
            name = f"etl.{phase}"
            if phase == "extract" or correlation is None:
                correlation = f"pipe-{i:09d}"
            corr = correlation
        else:
            name = rng.choice(NAMES[category])
            corr = None
        is_upgraded = i in upgraded
        cum = low_prio_cum if is_upgraded else prio_cum
        priority = bisect.bisect(cum, rng.random() * cum[-1])

        # Status by age: the last 15 minutes still has work in flight; older work is done.
        r = rng.random()
        if age < 900:
            status = "queued" if r < 0.5 else "running" if r < 0.56 else "failed" if r < 0.58 else "succeeded"
        else:
            status = "queued" if r < 0.03 else "failed" if r < 0.07 else "cancelled" if r < 0.09 else "succeeded"
        attempts = 0 if status in ("queued", "cancelled") else (3 if status == "failed" else 1 + (r > 0.985))
        queued_at = created
        wait = rng.expovariate(1 / (120.0 if priority < 4 else 20.0))
        started_at = finished_at = None
        if status in ("running", "succeeded", "failed"):
            started_at = min(queued_at + timedelta(seconds=wait), base)
            if status != "running":
                finished_at = min(started_at + timedelta(seconds=rng.expovariate(1 / 3.0)), base)
        elif status == "cancelled":
            finished_at = min(queued_at + timedelta(seconds=wait / 2), base)

        created_ms = epoch_ms - int(age * 1000)
        task_id = f"{created_ms:012x}{rng.getrandbits(80):020x}"
        if is_upgraded:
            steps = (
                ["prioritize", "urgent"]
                if i in twice
                else [("prioritize", "urgent", "critical")[bisect.bisect([60, 90], rng.random() * 100)]]
            )
            # Upgraded some way into its wait; then it started soon after.
            end = started_at or finished_at or base
            changed = queued_at + (end - queued_at) * (0.3 + 0.6 * rng.random())
            if started_at is not None:
                last = changed + timedelta(milliseconds=1500 * (len(steps) - 1))
                started_at = min(last + timedelta(seconds=rng.expovariate(1 / 4.0)), base)
                if finished_at is not None:
                    finished_at = max(finished_at, started_at)
            current = priority
            for step, action in enumerate(steps):
                target = TARGETS[action]
                at = min(changed + timedelta(milliseconds=step * 1500), base)
                history.append(
                    (
                        task_id,
                        stamp(at),
                        current,
                        target,
                        BUCKET_OF[current],
                        BUCKET_OF[target],
                        action,
                        REASONS[int(rng.random() * len(REASONS))],
                        USERS[bisect.bisect(user_cum, rng.random() * user_cum[-1])],
                        category,
                        phase,
                        stamp(queued_at),
                        stamp(started_at),  # what the trigger on tasks.started_at writes
                        (at - queued_at).total_seconds(),
                        (started_at - at).total_seconds() if started_at else None,
                    )
                )
                current = target
            priority = current

        running = status == "running"
        tasks.append(
            (
                task_id,
                name,
                category,
                phase,
                priority,
                BUCKET_OF[priority],
                status,
                '{"i": %d}' % i,
                '{"ok": true}' if status == "succeeded" else None,
                "RuntimeError: upstream timed out" if status == "failed" else None,
                corr,
                "bench",
                1,
                1,
                i + 1,
                None,
                attempts,
                3,
                f"{rng.getrandbits(128):032x}" if running else None,
                lease_until if running else None,
                None if status in ("queued", "cancelled") else f"bench-host:{1000 + i % 8}",
                stamp(created),
                stamp(queued_at),
                stamp(started_at),
                stamp(finished_at),
            )
        )
        if len(tasks) >= CHUNK or i == n_tasks - 1:
            yield tasks, history
            tasks, history = [], []


def _load(raw, table: str, columns: tuple[str, ...], rows: list[tuple], sqlite: bool) -> None:
    if sqlite:
        marks = ", ".join("?" * len(columns))
        raw.cursor().executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    else:
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def seed(db: Database, n_tasks: int, n_history: int, *, seed_value: int = 7) -> Seeded:
    """Bulk load straight through the driver (SQLite executemany, PostgreSQL COPY), secondary
    indexes dropped during the load and built afterwards from the models."""
    assert set(TASK_COLUMNS) == set(Task.__table__.c.keys()), "TASK_COLUMNS no longer matches the model"
    assert set(HISTORY_COLUMNS) == set(PriorityHistory.__table__.c.keys()) - {"id"}, "HISTORY_COLUMNS is stale"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    started = time.perf_counter()
    tables = (Task.__table__, PriorityHistory.__table__)
    indexes = [ix for table in tables for ix in table.indexes]
    statuses: dict[str, int] = {}
    n_hist = 0
    with db.engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)  # each exists: prepare_database made them (ddl_if: this dialect's only)
    raw = db.engine.raw_connection()
    try:
        if db.is_sqlite:
            raw.driver_connection.isolation_level = None
            raw.cursor().execute("BEGIN")
        for task_rows, history_rows in _task_chunks(n_tasks, n_history, seed_value, now, db.is_sqlite):
            _load(raw, "tasks", TASK_COLUMNS, task_rows, db.is_sqlite)
            if history_rows:
                _load(raw, "priority_history", HISTORY_COLUMNS, history_rows, db.is_sqlite)
            for row in task_rows:
                statuses[row[6]] = statuses.get(row[6], 0) + 1
            n_hist += len(history_rows)
        if db.is_sqlite:
            raw.cursor().execute("COMMIT")
        else:
            raw.commit()
    finally:
        raw.close()
    with db.engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
    if not db.is_sqlite:
        # Stands in for autovacuum, which a live database would have run after a load this size.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE tasks"))
            conn.execute(text("VACUUM ANALYZE priority_history"))
    _check_round_trip(db)
    return Seeded(n_tasks, n_hist, statuses, time.perf_counter() - started, now)


def _check_round_trip(db: Database) -> None:
    """The driver-level load must read back through the models exactly as the app's own writes do."""
    with db.session() as session:
        task = session.scalars(select(Task).where(Task.status == "succeeded").limit(1)).one()
        history = session.scalars(select(PriorityHistory).limit(1)).one()
    assert task.created_at.tzinfo is timezone.utc and task.finished_at >= task.started_at >= task.queued_at
    assert isinstance(task.args, dict) and history.changed_at.tzinfo is timezone.utc


# -- the raw baseline: hand-written SQL through the DB-API driver ---------------------------------


class RawDB:
    """A plain DB-API connection (sqlite3 / psycopg) to the bench database. SQL is written with
    `?` placeholders; PostgreSQL gets `%s`."""

    def __init__(self, url: str):
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.sqlite = parsed.get_backend_name() == "sqlite"
        if self.sqlite:
            self.conn = sqlite3.connect(parsed.database, isolation_level=None)
        else:
            import psycopg

            # Never prepared: each statement is planned for its own values (a prepared one turns
            # generic after a few runs; db.queries writes its filter values into the SQL instead).
            self.conn = psycopg.connect(
                host=parsed.host, port=parsed.port or 5432, user=parsed.username, password=parsed.password,
                dbname=parsed.database, autocommit=True, prepare_threshold=None,
            )  # fmt: skip

    def all(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        if not self.sqlite:
            sql = sql.replace("?", "%s")
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, tuple(params))
            return cursor.fetchall()
        finally:
            cursor.close()

    def stamp(self, value: datetime):
        naive = value.astimezone(timezone.utc).replace(tzinfo=None)
        return naive.isoformat(sep=" ", timespec="microseconds") if self.sqlite else naive

    def minute(self, column: str) -> str:
        return f"substr({column}, 1, 16)" if self.sqlite else f"date_trunc('minute', {column})"

    def truncate(self, column: str, unit: str) -> str:
        if self.sqlite:
            return f"substr({column}, 1, {13 if unit == 'hour' else 10})"
        return f"date_trunc('{unit}', {column})"

    def close(self) -> None:
        self.conn.close()


# -- (a) the Tasks page ------------------------------------------------------------------------

GRID_COLUMNS = "id, name, category, phase, priority, bucket, status, attempts, max_attempts, correlation_id, created_at"
RAW_SORT = {"created": "created_at", "priority": "priority", "status": "status", "name": "name", "id": "id"}


@dataclass
class GridCase:
    label: str
    filters: dict[str, Any]  # the filter controls: statuses, buckets, categories, phases, text
    sort: list[dict[str, str]]  # AG Grid sortModel
    start: int = 0


def grid_cases(sample_id: str, sample_correlation: str) -> list[GridCase]:
    """What people do on the Tasks page: every filter, every sortable column, deep pages.
    10,000 rows is as deep as the grid's scroll bar reaches with a counted (capped) total."""
    newest = []
    oldest = [{"colId": "created", "sort": "asc"}]
    return [
        GridCase("all, newest first", {}, newest),
        GridCase("all, newest first, rows 10,000+", {}, newest, 10_000),
        GridCase("queued, priority high to low", {"statuses": ["queued"]}, [{"colId": "priority", "sort": "desc"}]),
        GridCase(
            "queued, priority high to low, rows 5,000+",
            {"statuses": ["queued"]},
            [{"colId": "priority", "sort": "desc"}],
            5_000,
        ),
        GridCase("failed + cancelled, newest first", {"statuses": ["failed", "cancelled"]}, newest),
        GridCase("failed + cancelled, rows 9,900+", {"statuses": ["failed", "cancelled"]}, newest, 9_900),
        GridCase("queued + running, oldest first", {"statuses": ["queued", "running"]}, oldest),
        GridCase("etl / load, oldest first", {"categories": ["etl"], "phases": ["load"]}, oldest),
        GridCase("queued in high", {"statuses": ["queued"], "buckets": ["high"]}, newest),
        GridCase("low bucket, priority low to high", {"buckets": ["low"]}, [{"colId": "priority", "sort": "asc"}]),
        GridCase("alert / transform (rare)", {"categories": ["alert"], "phases": ["transform"]}, newest),
        GridCase("failed alerts", {"statuses": ["failed"], "categories": ["alert"]}, newest),
        GridCase(
            "report + alert, succeeded, rows 5,000+",
            {"statuses": ["succeeded"], "categories": ["report", "alert"]},
            newest,
            5_000,
        ),
        GridCase("search 'etl.' (name prefix)", {"text": "etl."}, newest),
        GridCase("search 'webapp.send_email'", {"text": "webapp.send_email"}, newest),
        GridCase("search a correlation id", {"text": sample_correlation}, newest),
        GridCase("search an id prefix (12 chars)", {"text": sample_id[:12]}, newest),
        GridCase("sort by name", {}, [{"colId": "name", "sort": "asc"}]),
        GridCase("sort by status, rows 10,000+", {}, [{"colId": "status", "sort": "desc"}], 10_000),
        GridCase("sort by priority", {}, [{"colId": "priority", "sort": "desc"}]),
        GridCase("sort by id", {}, [{"colId": "id", "sort": "asc"}]),
        GridCase("running", {"statuses": ["running"]}, newest),
    ]


def raw_grid(raw: RawDB, case: GridCase, page: int = 100, cap: int = 10_000) -> tuple[list[str], int | None]:
    """The same page and total with plain SQL: IN lists, an OR for the search text, ORDER BY the
    sort keys then created_at, id; the total as a capped count when the page is full."""
    where, params = [], []
    for key, column in (("statuses", "status"), ("buckets", "bucket"), ("categories", "category"), ("phases", "phase")):
        values = case.filters.get(key) or []
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params += values
    text = case.filters.get("text")
    if text:
        alternatives = ["correlation_id = ?", "(name >= ? AND name < ?)"]
        params += [text, text, text + "\U0010ffff"]
        lowered = text.lower()
        if len(lowered) >= 8 and re.fullmatch(r"[0-9a-f]+", lowered):
            alternatives.append("(id >= ? AND id < ?)")
            params += [lowered, lowered + "\U0010ffff"]
        where.append("(" + " OR ".join(alternatives) + ")")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    keys = [(s["colId"], s["sort"]) for s in case.sort] or [("created", "desc")]
    if keys[-1][0] != "id":
        if "created" not in [k for k, _ in keys]:
            keys.append(("created", keys[-1][1]))
        keys.append(("id", keys[-1][1]))
    order = ", ".join(f"{RAW_SORT[k]} {d.upper()}" for k, d in keys)
    rows = raw.all(
        f"SELECT {GRID_COLUMNS} FROM tasks{clause} ORDER BY {order} LIMIT {page} OFFSET {case.start}", params
    )
    if len(rows) < page and (rows or case.start == 0):
        return [r[0] for r in rows], case.start + len(rows)
    (counted,) = raw.all(f"SELECT count(*) FROM (SELECT 1 FROM tasks{clause} LIMIT {cap + 1}) AS capped", params)[0]
    return [r[0] for r in rows], counted if counted <= cap else None


# -- (b) the Overview ----------------------------------------------------------------------------


def raw_overview(raw: RawDB, now: datetime) -> dict[str, Any]:
    """The snapshot's database part (counts by status, queued cells with the oldest, throughput
    per minute over the last hour, workers online) in plain SQL."""
    since = now - timedelta(hours=1)
    return {
        "status": raw.all("SELECT status, count(*) FROM tasks GROUP BY status"),
        "cells": raw.all(
            "SELECT category, phase, bucket, count(*), min(queued_at) FROM tasks WHERE status = 'queued' "
            "GROUP BY category, phase, bucket"
        ),
        "throughput": raw.all(
            f"SELECT {raw.minute('finished_at')} AS m, status, count(*) FROM tasks "
            "WHERE finished_at >= ? AND finished_at <= ? GROUP BY m, status",
            [raw.stamp(since), raw.stamp(now)],
        ),
        "workers": raw.all(
            "SELECT id, hostname, pid, scope, concurrency, tasks_run, last_seen_at FROM workers "
            "WHERE last_seen_at >= ? AND stopped_at IS NULL ORDER BY started_at",
            [raw.stamp(now - timedelta(seconds=15))],
        ),
    }


# -- (c) the History page --------------------------------------------------------------------------


def raw_history(raw: RawDB, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """The history callback's five results in plain SQL: over time, by user, by category and
    phase, queue wait before/after (the stored waits), the newest 1,000 rows. One query after the
    other; ours (core.history.page) runs them on four threads."""
    where, params = [], []
    if start is not None:
        where.append("h.changed_at >= ?")
        params.append(raw.stamp(start))
    if end is not None:
        where.append("h.changed_at < ?")
        params.append(raw.stamp(end))
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    first, last = start, end
    if start is None or end is None:
        lo, hi = raw.all(f"SELECT min(changed_at), max(changed_at) FROM priority_history h{clause}", params)[0]
        first = first or (_as_utc(lo) if lo else None)
        last = last or (_as_utc(hi) if hi else None)
    unit = "hour" if first is None or last is None or last - first <= timedelta(days=7) else "day"
    bins = [10, 60, 300, 900, 3600, 14400]

    def bin_of(x: str) -> str:
        return (
            "CASE WHEN "
            + x
            + " IS NULL THEN -1 "
            + " ".join(f"WHEN {x} < {limit} THEN {i}" for i, limit in enumerate(bins))
            + f" ELSE {len(bins)} END"
        )

    return {
        "over_time": raw.all(
            f"SELECT {raw.truncate('h.changed_at', unit)} AS at, action, count(*) FROM priority_history h{clause} "
            "GROUP BY at, action ORDER BY at, action",
            params,
        ),
        "by_user": raw.all(
            f"SELECT changed_by, action, count(*) FROM priority_history h{clause} GROUP BY changed_by, action", params
        ),
        "by_category": raw.all(
            f"SELECT category, phase, count(*) FROM priority_history h{clause} GROUP BY category, phase", params
        ),
        "wait": raw.all(
            f"SELECT action, {bin_of('wait_before_s')} AS bb, {bin_of('wait_after_s')} AS ab, count(*), "
            "sum(wait_before_s), max(wait_before_s), sum(wait_after_s), max(wait_after_s) "
            f"FROM priority_history h{clause} GROUP BY action, bb, ab",
            params,
        ),
        "rows": raw.all(
            "SELECT h.id, h.changed_at, h.task_id, t.name, h.category, h.phase, h.action, h.from_priority, "
            "h.to_priority, h.from_bucket, h.to_bucket, h.changed_by, h.reason, h.queued_at, h.started_at, t.status "
            f"FROM priority_history h LEFT JOIN tasks t ON t.id = h.task_id{clause} "
            "ORDER BY h.changed_at DESC, h.id DESC LIMIT 1000",
            params,
        ),
        "total": raw.all(f"SELECT count(*) FROM priority_history h{clause}", params),
    }


def _as_utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


# -- measuring ---------------------------------------------------------------------------------


def _ms(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return (time.perf_counter() - start) * 1000.0, value


def interleaved(
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]], rounds: int
) -> dict[str, tuple[list, list]]:
    """Each case's (ours, raw) samples in ms: round after round over every case, the two sides
    back to back, which one goes first alternating, so load from elsewhere hits both alike."""
    samples = {label: ([], []) for label, _, _ in cases}
    for r in range(rounds):
        for label, ours, raw in cases:
            order = ((0, ours), (1, raw)) if r % 2 == 0 else ((1, raw), (0, ours))
            for side, function in order:
                samples[label][side].append(_ms(function)[0])
    return samples


def _p(values: list[float], pct: float = 95) -> float:
    return percentile(values, pct)


def print_cases(title: str, samples: dict[str, tuple[list, list]]) -> None:
    print(f"\n{title}")
    width = max(len(label) for label in samples)
    print(f"  {'case':{width}}  {'ours p50':>9} {'ours p95':>9}  {'raw p50':>8} {'raw p95':>8}  ratio(p95)")
    for label, (ours, raw) in samples.items():
        print(
            f"  {label:{width}}  {_p(ours, 50):9.1f} {_p(ours):9.1f}  {_p(raw, 50):8.1f} {_p(raw):8.1f}  "
            f"{_p(ours) / _p(raw):6.2f}"
        )
    sys.stdout.flush()


def pooled(samples: dict[str, tuple[list, list]]) -> tuple[list[float], list[float]]:
    ours = [v for o, _ in samples.values() for v in o]
    raw = [v for _, r in samples.values() for v in r]
    return ours, raw


def bench_tasks(ctx, raw: RawDB, rounds: int, full_size: bool) -> tuple[list[Row], dict]:

    with ctx.db.session() as session:
        sample_id = session.scalar(select(Task.id).where(Task.status == "queued").order_by(Task.created_at).limit(1))
        sample_corr = session.scalar(
            select(Task.correlation_id).where(Task.correlation_id.is_not(None)).order_by(Task.id.desc()).limit(1)
        )
    admin = ConsoleUser("bench", "bench-admin", Role.ADMIN, ROLE_PERMISSIONS[Role.ADMIN])
    cases = []
    for case in grid_cases(sample_id, sample_corr):
        filters = TaskFilters.from_inputs(
            case.filters.get("statuses"), case.filters.get("buckets"), case.filters.get("categories"),
            case.filters.get("phases"), case.filters.get("text"),
        )  # fmt: skip
        request = {"startRow": case.start, "endRow": case.start + 100, "sortModel": case.sort}

        def ours(request=request, filters=filters):
            response = tasks_page.fetch_rows(ctx, admin, request, filters)
            to_json(response)  # what Dash does with the callback's return value
            return response

        def baseline(case=case):
            return raw_grid(raw, case)

        # The two sides must agree before their speed means anything.
        response, (raw_ids, raw_total) = ours(), baseline()
        got = [r["id"] for r in response["rowData"]]
        want_total = -1 if raw_total is None else raw_total
        if got != raw_ids or response["rowCount"] != want_total:
            raise AssertionError(
                f"{case.label}: ours {len(got)} rows / {response['rowCount']} vs raw {len(raw_ids)} rows / {want_total}"
            )
        if not got and full_size:
            raise AssertionError(f"{case.label}: no rows (the seed should cover every case)")
        cases.append((case.label, ours, baseline))
    samples = interleaved(cases, rounds)
    print_cases(f"(a) Tasks page: fetch_rows + JSON for 100 rows, ms ({rounds} samples per case and side)", samples)
    ours_all, raw_all = pooled(samples)
    worst = max(samples, key=lambda label: _p(samples[label][0]))
    row = Row(
        "console",
        f"tasks page data, p95 of {len(cases)} filter/sort/depth cases",
        _p(ours_all),
        _p(raw_all),
        "ms",
        f"<= {TASKS_P95_MS:g} ms",
        _p(ours_all) <= TASKS_P95_MS,
        1,
    )
    info = {"cases": {k: {"ours_p95": _p(o), "raw_p95": _p(r)} for k, (o, r) in samples.items()}, "slowest": worst}
    return [row], info


def bench_overview(runtime, raw: RawDB, rounds: int) -> tuple[list[Row], dict]:

    snapshot = OverviewSnapshot(runtime.db, runtime.broker)

    def raw_sql():
        return raw_overview(raw, datetime.now(timezone.utc))

    # The snapshot itself: what the background thread computes every 2 s.
    compute = interleaved([("snapshot", snapshot.compute, raw_sql)], max(5, rounds // 2))
    latest = snapshot.get()  # starts the background refresh, as in the web process
    assert latest["database"]["status"]["succeeded"] > 0 and latest["throughput"]["minutes"]
    try:

        def refresh():
            return to_json(overview_page.render(snapshot.get()))

        # 10 refreshes per round: one per browser polling; the snapshot thread runs meanwhile.
        served = interleaved([(f"refresh {i}", refresh, raw_sql) for i in range(10)], rounds)
    finally:
        snapshot.stop()
    ours_refresh, raw_refresh = pooled(served)
    ours_compute, raw_compute = compute["snapshot"]
    print(
        f"\n(b) Overview, ms: refresh from the snapshot p50 {_p(ours_refresh, 50):.1f} / p95 {_p(ours_refresh):.1f} "
        f"({len(ours_refresh)} samples); the same figures straight from SQL p50 {_p(raw_refresh, 50):.1f} / "
        f"p95 {_p(raw_refresh):.1f}"
    )
    print(
        f"    snapshot compute (broker depths + database) p50 {_p(ours_compute, 50):.1f} / p95 {_p(ours_compute):.1f}; "
        f"its SQL alone, raw: p50 {_p(raw_compute, 50):.1f} / p95 {_p(raw_compute):.1f}"
    )
    rows = [
        Row(
            "console",
            "overview refresh p95 (callback from the cached snapshot)",
            _p(ours_refresh),
            _p(raw_refresh),
            "ms",
            f"<= {OVERVIEW_P95_MS:g} ms",
            _p(ours_refresh) <= OVERVIEW_P95_MS,
            1,
        ),
        Row(
            "console",
            "overview snapshot compute p95 (every 2 s, background)",
            _p(ours_compute),
            _p(raw_compute),
            "ms",
            f"<= {SNAPSHOT_SANE_MS:g} ms",
            _p(ours_compute) <= SNAPSHOT_SANE_MS,
            1,
        ),
    ]
    return rows, {"refresh_p95": _p(ours_refresh), "compute_p95": _p(ours_compute)}


def bench_history(ctx, raw: RawDB, rounds: int) -> tuple[list[Row], dict]:

    today = datetime.now(timezone.utc).date()
    first_day = today - timedelta(days=history_page.DEFAULT_DAYS - 1)
    filters = {
        f"last {history_page.DEFAULT_DAYS} days (the page's default)": (first_day.isoformat(), today.isoformat()),
        "no date filter (everything)": (None, None),
    }
    rows, info = [], {}
    for label, (start_date, end_date) in filters.items():
        f = core_history.make_filter(start_date, end_date)

        def ours(start_date=start_date, end_date=end_date):
            outputs = history_page.render(ctx, start_date, end_date, None, None, None, None)
            to_json(outputs)
            return outputs

        def baseline(f=f):
            return raw_history(raw, f.start, f.end)

        outputs, expected = ours(), baseline()
        assert outputs[-1] is None, outputs[-1]  # no error alert
        table = outputs[5]
        assert [r["id"] for r in table] == [r[0] for r in expected["rows"]], "history table differs from raw SQL"
        total = expected["total"][0][0]
        assert outputs[7].startswith(f"{total:,} upgrade"), (outputs[7], total)
        samples = interleaved([(label, ours, baseline)], rounds)
        o, r = samples[label]
        parts = {}
        for name, function in (
            ("changes_over_time", lambda: core_history.changes_over_time(ctx.db, f)),
            ("changes_by_user", lambda: core_history.changes_by_user(ctx.db, f)),
            ("changes_by_category_phase", lambda: core_history.changes_by_category_phase(ctx.db, f)),
            ("queue_wait", lambda: core_history.queue_wait(ctx.db, f)),
            ("history_rows (table + count)", lambda: core_history.history_rows(ctx.db, f, limit=1000)),
        ):
            parts[name] = statistics_median([_ms(function)[0] for _ in range(3)])
        print(
            f"\n(c) History, {label}: {total:,} matching rows; whole refresh (4 charts + table + JSON) "
            f"p50 {_p(o, 50):.1f} / p95 {_p(o):.1f} ms, raw SQL p50 {_p(r, 50):.1f} / p95 {_p(r):.1f} ms"
        )
        print("    core.history alone, median of 3: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        rows.append(
            Row(
                "console",
                f"history charts p95, {label}",
                _p(o),
                _p(r),
                "ms",
                f"<= {HISTORY_P95_MS:g} ms",
                _p(o) <= HISTORY_P95_MS,
                1,
            )
        )
        info[label] = {"ours_p95": _p(o), "raw_p95": _p(r), "rows": total, "parts_ms": parts}
    return rows, info


def statistics_median(values: list[float]) -> float:
    return percentile(values, 50)


# -- (d) the web process's memory ----------------------------------------------------------------

BENCH_USER = "bench-admin"
BENCH_PASSWORD = "bench password 1234"
HOSTILE_USER = "bench-hostile"
# The most expensive list a viewer may ask for: every status, a name prefix, the deepest offset.
HOSTILE_QUERY = "/api/v1/tasks?status=queued,running,succeeded,failed,cancelled&q=etl.&offset=10000&limit=500"
ME_P95_MS = 200.0


def _memory_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values


class WebClient:
    """Signs in through the form and calls Dash callbacks the way the browser does."""

    def __init__(self, base: str):
        import requests

        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.latencies: dict[str, list[float]] = {}

    def sign_in(self, username: str, password: str) -> None:
        page = self.http.get(self.base + "/login", timeout=30).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = self.http.post(
            self.base + "/login",
            data={"username": username, "password": password, "csrf_token": token},
            allow_redirects=False,
            timeout=30,
        )
        assert response.status_code == 302, response.text[:200]
        self.dependencies = self.http.get(self.base + "/_dash-dependencies", timeout=30).json()

    def callback(self, kind: str, output: str, inputs: dict[str, Any], state: dict[str, Any] | None = None):
        """Call the callback whose outputs include `output` ("id.property")."""
        dep = next(
            d for d in self.dependencies if output in [p.split("@")[0] for p in d["output"].strip(".").split("...")]
        )
        outputs = []
        for part in dep["output"].strip(".").split("..."):
            component, prop = part.rsplit(".", 1)
            outputs.append({"id": component, "property": prop.split("@")[0]})

        def fill(items, values):
            return [dict(i, value=values.get(f"{i['id']}.{i['property']}")) for i in items]

        body = {
            "output": dep["output"],
            "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": fill(dep["inputs"], inputs),
            "state": fill(dep["state"], state or {}),
            "changedPropIds": list(inputs),
        }
        headers = {"X-CSRFToken": self.http.cookies.get("_csrf_token")}
        start = time.perf_counter()
        response = self.http.post(self.base + "/_dash-update-component", json=body, headers=headers, timeout=120)
        self.latencies.setdefault(kind, []).append((time.perf_counter() - start) * 1000.0)
        assert response.status_code == 200, (kind, response.status_code, response.text[:300])
        return response.json()["response"]


def bench_rss(env: BenchEnv, sample_id: str, rounds: int) -> tuple[list[Row], dict]:
    """`run.py serve` (waitress, its own embedded nats-server) on the seeded database; sign in,
    open every page and use it over HTTP; read the process's RSS from /proc."""
    import requests

    db = Database(env.database_url)
    try:
        create_user(db, BENCH_USER, BENCH_PASSWORD, "admin")
        create_user(db, HOSTILE_USER, BENCH_PASSWORD, "viewer")
        admin_token = system_create_token(db, BENCH_USER, "bench").secret
        hostile_token = system_create_token(db, HOSTILE_USER, "bench").secret
    finally:
        db.dispose()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    environ.update(
        SWITCHYARD_DATA_DIR=str(env.tmp / "web"),
        SWITCHYARD_DATABASE_URL=env.database_url,
        PYTHONUNBUFFERED="1",
    )
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "serve", "--port", "0", "--workers", "0"],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        base = None
        deadline = time.monotonic() + 120
        while base is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            output.append(line)
            found = re.search(r"Switchyard console: (http://\S+)", line)
            base = found.group(1) if found else None
        if base is None:
            raise RuntimeError("run.py serve did not start:\n" + "".join(output[-20:]))
        # Keep draining its output so the pipe never fills.
        import threading

        threading.Thread(target=lambda: [output.append(x) for x in server.stdout], daemon=True).start()
        requests.get(base + "/login", timeout=30).raise_for_status()
        started = _memory_mb(server.pid)

        client = WebClient(base)
        client.sign_in(BENCH_USER, BENCH_PASSWORD)
        today = datetime.now(timezone.utc).date()
        week = ((today - timedelta(days=6)).isoformat(), today.isoformat())
        for _ in range(rounds):
            for path in ("/", "/tasks", f"/tasks/{sample_id}", "/history", "/users"):
                page = client.callback("page", "page.children", {"url.pathname": path})
                assert "Not allowed" not in json.dumps(page), path
            for _ in range(10):
                client.callback("overview refresh", "overview-cards.children", {"overview-tick.n_intervals": 1})
            for case in grid_cases(sample_id, "pipe-000000000"):
                state = {
                    "tasks-filter-status.value": case.filters.get("statuses"),
                    "tasks-filter-bucket.value": case.filters.get("buckets"),
                    "tasks-filter-category.value": case.filters.get("categories"),
                    "tasks-filter-phase.value": case.filters.get("phases"),
                    "tasks-filter-text.value": case.filters.get("text"),
                }
                request = {"startRow": case.start, "endRow": case.start + 100, "sortModel": case.sort}
                response = client.callback(
                    "tasks rows", "tasks-grid.getRowsResponse", {"tasks-grid.getRowsRequest": request}, state
                )
                assert "rowData" in response["tasks-grid"]["getRowsResponse"]
            for start_date, end_date in (week, (None, None)):
                dates = {"history-from.value": start_date, "history-to.value": end_date}
                client.callback("history refresh", "history-over-time.figure", dates)
            download = client.callback(
                "history csv",
                "history-download-data.data",
                {"history-download.n_clicks": 1},
                {"history-from.value": None, "history-to.value": None},
            )
            assert download["history-download-data"]["data"]["content"].count("\n") > 1000
        memory = _memory_mb(server.pid)
        fairness = hostile_readers(base, admin_token, hostile_token)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(
        f"\n(d) Web process (run.py serve, pid {server.pid}): RSS after start {started['VmRSS']:.0f} MB; after "
        f"{rounds} round(s) of every page: RSS {memory['VmRSS']:.0f} MB, peak (VmHWM) {memory['VmHWM']:.0f} MB"
    )
    print(
        "    HTTP callback latency through waitress, ms: "
        + "; ".join(
            f"{kind} p50 {_p(v, 50):.0f} / p95 {_p(v):.0f} (n={len(v)})" for kind, v in client.latencies.items()
        )
    )
    print(
        f"    8 hostile readers ({HOSTILE_QUERY}): answers {fairness['hostile']}; an admin's GET /api/v1/me "
        f"p50 {fairness['busy_p50']:.1f} / p95 {fairness['busy_p95']:.1f} ms (alone: p95 {fairness['idle_p95']:.1f} ms)"
    )
    rows = [
        Row(
            "console",
            "web process peak RSS (VmHWM) after using every page",
            memory["VmHWM"],
            started["VmRSS"],
            "MB",
            f"<= {RSS_MB:g} MB",
            memory["VmHWM"] <= RSS_MB,
        ),
        Row(
            "console",
            "API GET /me p95 while 8 hostile readers run (baseline: alone)",
            fairness["busy_p95"],
            fairness["idle_p95"],
            "ms",
            f"<= {ME_P95_MS:g} ms",
            fairness["busy_p95"] <= ME_P95_MS,
        ),
    ]
    info = {
        "fairness": fairness,
        "rss_start_mb": started["VmRSS"],
        "rss_mb": memory["VmRSS"],
        "peak_mb": memory["VmHWM"],
        "http_ms": {k: {"p50": _p(v, 50), "p95": _p(v)} for k, v in client.latencies.items()},
    }
    return rows, info


def hostile_readers(base: str, admin_token: str, hostile_token: str, seconds: float = 15.0) -> dict[str, Any]:
    """One viewer's token in 8 threads asks for the most expensive list the API allows, over and
    over; meanwhile an admin asks who they are. One user's reads must not starve everyone else."""
    import threading

    import requests

    def me_latencies(n: int) -> list[float]:
        samples = []
        with requests.Session() as session:
            for _ in range(n):
                started = time.perf_counter()
                session.get(base + "/api/v1/me", headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
                samples.append((time.perf_counter() - started) * 1000)
                time.sleep(0.05)
        return samples

    idle = me_latencies(40)
    stop = threading.Event()
    answers: dict[int, int] = {}

    def hostile() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                status = session.get(
                    base + HOSTILE_QUERY, headers={"Authorization": f"Bearer {hostile_token}"}, timeout=120
                ).status_code
                answers[status] = answers.get(status, 0) + 1

    threads = [threading.Thread(target=hostile, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    busy = me_latencies(int(seconds / 0.1))
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    return {
        "idle_p95": _p(idle),
        "busy_p50": _p(busy, 50),
        "busy_p95": _p(busy),
        "hostile": dict(sorted(answers.items())),
    }


# -- main ------------------------------------------------------------------------------------------


class _Ctx:
    """What the page functions use of the console context."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.db = runtime.db
        self.service = runtime.service


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000, help="tasks to seed")
    p.add_argument("--history", type=int, default=100_000, help="priority_history rows to seed")
    p.add_argument("--no-rss", action="store_true", help="skip starting the web process")
    args = p.parse_args()
    rounds = 5 * max(args.repeats, 1)  # samples per case and side

    print(
        f"bench_console: {args.tasks:,} tasks, {args.history:,} priority_history rows; {rounds} samples per case "
        f"and side (5 x --repeats), p95 reported"
    )
    with BenchEnv("console", sync_always=args.sync_always) as env:
        context = env.describe()
        db = Database(env.database_url)
        try:
            prepare_database(db)
            seeded = seed(db, args.tasks, args.history)
        finally:
            db.dispose()
        print(
            f"  seeded       {seeded.tasks:,} tasks {seeded.statuses}, {seeded.history:,} history rows "
            f"in {seeded.seconds:.0f} s"
        )
        context.update(
            seeded={
                "tasks": seeded.tasks,
                "history": seeded.history,
                "statuses": seeded.statuses,
                "seconds": seeded.seconds,
            }
        )
        rows: list[Row] = []
        runtime = Runtime.open(env.settings, require_broker=True)
        raw = RawDB(env.database_url)
        try:
            ctx = _Ctx(runtime)
            found, info = bench_tasks(ctx, raw, rounds, args.tasks >= 1_000_000)
            rows += found
            context["tasks"] = info
            found, info = bench_overview(runtime, raw, rounds)
            rows += found
            context["overview"] = info
            found, info = bench_history(ctx, raw, rounds)
            rows += found
            context["history"] = info
            with runtime.db.session() as session:
                sample_id = session.scalar(select(Task.id).where(Task.status == "queued").limit(1))
        finally:
            raw.close()
            runtime.close()
        if not args.no_rss:
            found, info = bench_rss(env, sample_id, max(1, args.repeats // 3))
            rows += found
            context["web"] = info
    return finish(
        args,
        rows,
        context,
        f"bench_console summary ({env.backend}; baseline: the same results from "
        "hand-written SQL through the DB-API driver)",
    )


if __name__ == "__main__":
    sys.exit(main())
