"""One overview snapshot per process, refreshed in the background.

Every browser polls about every 2 s; all of them read the same snapshot, so 50 open consoles
cost the broker and the database no more than one.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from core.broker import BrokerThread
from core.errors import SwitchyardError
from core.outbox import relay_backlog
from core.stats import broker_depths, database_stats
from db.engine import Database
from db.models import Task, TaskStatus, WorkerRecord, utcnow

log = logging.getLogger(__name__)

WORKER_ONLINE_WINDOW = timedelta(seconds=15)
THROUGHPUT_WINDOW = timedelta(hours=1)
THROUGHPUT_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def throughput_last_hour(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """Tasks finished per minute over the hour up to `now`, by outcome, counted in SQL.

    {'start', 'end' (aware UTC: the chart's fixed range, now - 60 min .. now),
     'minutes': [start of each minute bin, oldest first, every bin present],
     'succeeded': [count per bin], 'failed': [count per bin]}
    """
    now = now or utcnow()
    start = now - THROUGHPUT_WINDOW
    first = start.replace(second=0, microsecond=0)
    minutes = [first + timedelta(minutes=i) for i in range(int((now - first).total_seconds() // 60) + 1)]
    if db.is_sqlite:
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' text: the first 16 characters are the minute.
        minute = func.substr(Task.finished_at, 1, 16)
    else:
        minute = func.date_trunc("minute", Task.finished_at)
    minute = minute.label("minute")
    counts = {status: [0] * len(minutes) for status in THROUGHPUT_STATUSES}
    with db.session() as session:
        # No condition on status: with one, SQLite may walk a status index over every finished
        # task instead of the finished_at range. Cancelled rows (few) are dropped below.
        rows = session.execute(
            select(minute, Task.status, func.count())
            .where(Task.finished_at >= start, Task.finished_at <= now)
            .group_by(minute, Task.status)
        ).all()
    for value, status, count in rows:
        if status not in counts:
            continue
        at = _minute(value)
        index = int((at - first).total_seconds() // 60)
        if 0 <= index < len(minutes):
            counts[status][index] += count
    return {
        "start": start.isoformat(),
        "end": now.isoformat(),
        "minutes": [m.isoformat() for m in minutes],
        **counts,
    }


def _minute(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value[:16])
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def workers_online(db: Database) -> list[dict[str, Any]]:
    since = utcnow() - WORKER_ONLINE_WINDOW
    with db.session() as session:
        workers = session.scalars(
            select(WorkerRecord)
            .where(WorkerRecord.last_seen_at >= since, WorkerRecord.stopped_at.is_(None))
            .order_by(WorkerRecord.started_at)
        ).all()
    return [
        {
            "id": w.id,
            "hostname": w.hostname,
            "pid": w.pid,
            "scope": w.scope,
            "concurrency": w.concurrency,
            "tasks_run": w.tasks_run,
            "last_seen_at": w.last_seen_at.isoformat(),
        }
        for w in workers
    ]


class OverviewSnapshot:
    """Computes the overview every `interval` seconds on a daemon thread; readers never wait
    for the broker or the database."""

    def __init__(self, db: Database, broker: BrokerThread | None, interval: float = 2.0):
        self.db = db
        self.broker = broker
        self.interval = interval
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.computations = 0

    def get(self) -> dict[str, Any]:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._latest = self.compute()
                    self._thread = threading.Thread(target=self._loop, name="overview-snapshot", daemon=True)
                    self._thread.start()
        return self._latest

    def latest(self) -> dict[str, Any] | None:
        """The last snapshot taken, without taking one (None before the first)."""
        return self._latest

    def compute(self) -> dict[str, Any]:
        self.computations += 1
        snapshot: dict[str, Any] = {"taken_at": utcnow().isoformat(), "errors": []}
        try:
            snapshot["broker"] = self.broker.run(broker_depths(self.broker.broker)) if self.broker else None
            if self.broker is None:
                snapshot["errors"].append("broker not connected")
        except SwitchyardError as error:
            snapshot["broker"] = None
            snapshot["errors"].append(str(error))
        try:
            snapshot["database"] = database_stats(self.db)
            snapshot["throughput"] = throughput_last_hour(self.db)
            snapshot["workers"] = workers_online(self.db)
            snapshot["relay_backlog"] = relay_backlog(self.db)
        except SwitchyardError as error:
            snapshot.setdefault("database", None)
            snapshot.setdefault("throughput", None)
            snapshot.setdefault("workers", [])
            snapshot["errors"].append(str(error))
        return snapshot

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._latest = self.compute()
            except Exception:
                log.exception("overview snapshot failed")

    def stop(self) -> None:
        self._stop.set()
