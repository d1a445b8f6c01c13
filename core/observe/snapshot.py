"""One overview snapshot per process, refreshed in the background.

Every browser polls about every 2 s; all of them read the same snapshot, so 50 open consoles
cost the broker and the database no more than one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from core.broker.jetstream import BrokerThread
from core.errors import SwitchyardError
from core.observe.stats import (
    broker_depths,
    database_stats,
    relay_backlog,
    throughput_last_hour,
    workers_died,
    workers_online,
)
from db.engine import Database
from db.models import utcnow

log = logging.getLogger(__name__)


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

    def get(self) -> dict[str, Any]:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._latest = self.compute()
                    self._thread = threading.Thread(target=self._loop, name="overview-snapshot", daemon=True)
                    self._thread.start()
        return self._latest or {}

    def latest(self) -> dict[str, Any] | None:
        """The last snapshot taken, without taking one (None before the first)."""
        return self._latest

    def compute(self) -> dict[str, Any]:
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
            snapshot["workers_died"] = workers_died(self.db)
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
        """End the refresh thread (benchmarks/bench_console.py measures with and without it)."""
        self._stop.set()
