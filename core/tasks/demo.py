"""Demo traffic for `serve --demo`: every category, phase and priority, some failures, shaped so
that priority is visible.

`serve --demo` runs two in-process workers: one takes only the high bucket, one takes every
bucket (high first, then normal, then low). The demo sends more normal and low work than the
second worker can run, so a backlog forms there (and low waits behind normal, as it should),
while alerts and critical ETL in the high bucket run within a second of arriving. The backlog
is capped at BACKLOG_CAP queued normal and low tasks: past it, only high work is sent until the
workers catch up. A starting backlog is sent at once, so the first screen already shows it.
"""

from __future__ import annotations

import logging
import random
import threading

from core.errors import SwitchyardError
from core.priority import Bucket
from core.tasks.rows import DispatchRequest
from core.tasks.service import TaskService
from db.queries import stats as stats_queries

log = logging.getLogger(__name__)

BACKLOG_CAP = 150  # queued normal + low tasks above which the demo sends only high work
STARTING_BACKLOG = 6  # backlog batches sent at start


def high_batch(rng: random.Random) -> list[DispatchRequest]:
    """What must not wait: an alert or two, now and then a critical ETL extract."""
    batch = [
        DispatchRequest(
            "demo.echo",
            {"alert": rng.choice(["disk", "latency", "errors"])},
            priority=rng.choice([8, 8, 9]),
            category="alert",
        )
        for _ in range(rng.randint(1, 2))
    ]
    if rng.random() < 0.3:
        batch.append(
            DispatchRequest(
                "etl.extract",
                {"source": "payments", "rows": rng.randint(100, 5_000), "seconds": rng.uniform(0.2, 0.8)},
                priority=10,
            )
        )
    return batch


def backlog_batch(rng: random.Random) -> list[DispatchRequest]:
    """Normal and low work, slower than one worker runs it: about 15 s of work every 2 s."""
    batch = [
        DispatchRequest(
            "etl.extract",
            {
                "source": rng.choice(["orders", "users", "events"]),
                "rows": rng.randint(100, 50_000),
                "seconds": rng.uniform(0.5, 2),
            },
            priority=rng.choice([2, 4, 5, 5, 6]),
        ),
        DispatchRequest("demo.sleep", {"seconds": rng.uniform(1, 4)}, priority=rng.randint(4, 7), category="webapp"),
        DispatchRequest("demo.sleep", {"seconds": rng.uniform(2, 6)}, priority=rng.randint(0, 3), category="report"),
        DispatchRequest(
            "demo.record",
            {"value": rng.randint(1, 100), "seconds": rng.uniform(0.5, 2)},
            priority=rng.randint(0, 7),
            category="report",
        ),
    ]
    if rng.random() < 0.25:
        batch.append(
            DispatchRequest(
                "demo.fail",
                {"message": "upstream returned 503"},
                priority=rng.randint(3, 6),
                category="webapp",
                max_attempts=2,
            )
        )
    return batch


def demo_batch(rng: random.Random, *, backlog: int = 0) -> list[DispatchRequest]:
    """One tick of traffic: high work always, normal and low work while the backlog is below the cap."""
    return high_batch(rng) + (backlog_batch(rng) if backlog < BACKLOG_CAP else [])


class DemoTraffic:
    def __init__(self, service: TaskService, interval_seconds: float = 2.0, seed: int | None = None):
        self.service = service
        self.interval = interval_seconds
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def start(self) -> "DemoTraffic":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def backlog(self) -> int:
        """Queued normal and low tasks now."""
        with self.service.db.reading() as session:
            cells = stats_queries.queued_cells(session)
        return sum(n for _c, _p, bucket, n, _oldest in cells if bucket != Bucket.HIGH)

    def _send(self, batch: list[DispatchRequest]) -> None:
        try:
            self.service.dispatch_tasks(batch, created_by="demo")
        except SwitchyardError as error:
            log.warning("demo traffic paused: %s", error)

    def _run(self) -> None:
        starting, pause = True, 0.0
        while not self._stop.wait(pause):
            pause = self.interval
            try:
                backlog = self.backlog()
            except SwitchyardError as error:  # the database is down: try again next tick
                log.warning("demo traffic paused: %s", error)
                continue
            batch = demo_batch(self.rng, backlog=backlog)
            if starting and backlog < BACKLOG_CAP:
                batch += [request for _ in range(STARTING_BACKLOG) for request in backlog_batch(self.rng)]
            starting = False
            self._send(batch)
