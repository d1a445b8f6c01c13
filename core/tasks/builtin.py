"""The tasks every Switchyard knows: demo tasks and the ETL pipeline extract -> transform -> load."""

from __future__ import annotations

import importlib
import time
from typing import Any

from core.errors import InvalidInput
from core.settings import Settings
from core.tasks.registry import TaskContext, TaskRegistry


class DemoFailure(RuntimeError):
    pass


def _pause(seconds: Any) -> None:
    seconds = float(seconds or 0)
    if seconds > 0:
        time.sleep(min(seconds, 3600))


def register_builtin_tasks(registry: TaskRegistry) -> TaskRegistry:
    @registry.task("demo.sleep", category="webapp")
    def sleep(ctx: TaskContext, seconds: float = 1.0, **_: Any) -> dict:
        _pause(seconds)
        return {"slept": float(seconds)}

    @registry.task("demo.fail", category="webapp")
    def fail(ctx: TaskContext, message: str = "demo.fail always fails", seconds: float = 0, **_: Any) -> None:
        _pause(seconds)
        raise DemoFailure(str(message))

    @registry.task("demo.echo", category="webapp")
    def echo(ctx: TaskContext, **args: Any) -> dict:
        return args

    @registry.task("demo.record", category="report")
    def record(ctx: TaskContext, seconds: float = 0, value: Any = None, **_: Any) -> dict:
        """Records one effect in task_effects: makes 'ran exactly once' countable."""
        _pause(seconds)
        ctx.record_effect(value)
        return {"recorded": value}

    @registry.task("etl.extract", category="etl", phase="extract", next_task="etl.transform")
    def extract(ctx: TaskContext, source: str = "demo", rows: int = 1000, seconds: float = 0, **_: Any) -> dict:
        _pause(seconds)
        return {"source": source, "rows": int(rows), "seconds": seconds}

    @registry.task("etl.transform", category="etl", phase="transform", next_task="etl.load")
    def transform(ctx: TaskContext, source: str = "demo", rows: int = 0, seconds: float = 0, **_: Any) -> dict:
        _pause(seconds)
        return {"source": source, "rows": int(rows), "seconds": seconds, "transformed": True}

    @registry.task("etl.load", category="etl", phase="load")
    def load(ctx: TaskContext, source: str = "demo", rows: int = 0, seconds: float = 0, **_: Any) -> dict:
        _pause(seconds)
        ctx.record_effect({"loaded_rows": int(rows), "source": source})
        return {"source": source, "loaded_rows": int(rows)}

    return registry


def default_registry() -> TaskRegistry:
    return register_builtin_tasks(TaskRegistry())


def registry_for(settings: Settings) -> TaskRegistry:
    """The built-in tasks plus those of every module in SWITCHYARD_TASK_MODULES. Each module
    defines `register(registry)`, which adds its tasks with `@registry.task(...)`. Workers and
    every process that dispatches must load the same modules."""
    registry = default_registry()
    for name in settings.task_modules:
        try:
            module = importlib.import_module(name)
        except Exception as error:
            raise InvalidInput(f"SWITCHYARD_TASK_MODULES: cannot import {name!r}: {error}") from None
        register = getattr(module, "register", None)
        if not callable(register):
            raise InvalidInput(f"SWITCHYARD_TASK_MODULES: module {name!r} has no register(registry) function")
        register(registry)
    return registry
