"""The task bench_peers.py adds to Switchyard (SWITCHYARD_TASK_MODULES=switchyard_tasks): the
same start stamp the peers' latency tasks send. Runs in the main venv, in the worker process."""

from __future__ import annotations

from typing import Any

from side_common import send_stamp


def register(registry: Any) -> None:
    @registry.task("bench.stamp", category="webapp")
    def stamp(ctx: Any, sample: int = 0, **_: Any) -> None:
        send_stamp(sample)
