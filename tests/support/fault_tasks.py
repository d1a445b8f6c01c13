"""Tasks for fault scenarios, loaded by worker processes through SWITCHYARD_TASK_MODULES."""

from __future__ import annotations

import os
import signal

from core.tasks.registry import TaskContext, TaskRegistry


def register(registry: TaskRegistry) -> None:
    @registry.task("test.poison", category="webapp")
    def poison(ctx: TaskContext, **_) -> None:
        """Kills the worker process that runs it, every time: a segfaulting extension, an OOM kill."""
        os.kill(os.getpid(), signal.SIGKILL)
