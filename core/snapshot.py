"""One overview snapshot per process, refreshed in the background.

Every browser polls about every 2 s; all of them read the same snapshot, so 50 open consoles
cost the broker and the database no more than one.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from core.broker import BrokerThread
from core.errors import SwitchyardError
from core.stats import broker_depths, database_stats
from db.engine import Database
from db.models import Task, TaskStatus, WorkerRecord, utcnow

log = logging.getLogger(__name__)

WORKER_ONLINE_WINDOW = timedelta(seconds=15)


def throughput_last_hour(db: Database) -> list[dict[str, Any]]:
    """Finished tasks per minute over the last hour, by outcome."""
    since = utcnow() - timedelta(hours=1)
    with db.session() as session:
        rows = session.execute(
            select(Task.finished_at, Task.status).where(
                Task.finished_at >= since, Task.status.in_((TaskStatus.SUCCEEDED, TaskStatus.FAILED))
            )
        ).all()
    per_minute: dict[tuple[str, str], int] = {}
    for finished_at, status in rows:
        minute = finished_at.replace(second=0, microsecond=0).isoformat()
        per_minute[(minute, status)] = per_minute.get((minute, status), 0) + 1
    return [{"minute": m, "status": s, "count": n} for (m, s), n in sorted(per_minute.items())]


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
        except SwitchyardError as error:
            snapshot.setdefault("database", None)
            snapshot.setdefault("throughput", [])
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
