"""Demo traffic for `serve --demo`: every category, phase and priority, some failures."""

from __future__ import annotations

import logging
import random
import threading

from core.errors import SwitchyardError
from core.tasks.rows import DispatchRequest
from core.tasks.service import TaskService

log = logging.getLogger(__name__)


def demo_batch(rng: random.Random) -> list[DispatchRequest]:
    """About a dozen tasks: a mix a real system might see in a second or two."""
    batch = [
        DispatchRequest(
            "etl.extract",
            {
                "source": rng.choice(["orders", "users", "events"]),
                "rows": rng.randint(100, 50_000),
                "seconds": rng.uniform(0.2, 2),
            },
            priority=rng.choice([2, 4, 5, 5, 6]),
        ),
        DispatchRequest(
            "demo.sleep", {"seconds": rng.uniform(0.05, 1.5)}, priority=rng.randint(3, 7), category="webapp"
        ),
        DispatchRequest("demo.sleep", {"seconds": rng.uniform(0.5, 4)}, priority=rng.randint(0, 3), category="report"),
        DispatchRequest(
            "demo.echo",
            {"alert": rng.choice(["disk", "latency", "errors"])},
            priority=rng.choice([8, 9]),
            category="alert",
        ),
        DispatchRequest(
            "demo.record",
            {"value": rng.randint(1, 100), "seconds": rng.uniform(0.1, 1)},
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.service.dispatch_tasks(demo_batch(self.rng), created_by="demo")
            except SwitchyardError as error:
                log.warning("demo traffic paused: %s", error)
