"""Tasks are plain Python functions registered by name; workers look them up here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import InvalidInput
from core.priority import PHASES


@dataclass
class TaskContext:
    """What a running task knows about itself, and its way to record an effect.

    Effects are written in the same transaction as the fenced completion, so a task that
    ran twice (a lost lease) still leaves exactly one effect.
    """

    task_id: str
    generation: int
    attempt: int
    priority: int
    correlation_id: str | None
    worker_id: str
    effects: list[Any] = field(default_factory=list)

    def record_effect(self, value: Any = None) -> None:
        self.effects.append(value)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    func: Callable[..., Any]
    category: str
    phase: str = "default"
    next_task: str | None = None


class TaskRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def task(
        self, name: str, *, category: str, phase: str = "default", next_task: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: `@registry.task("etl.extract", category="etl", phase="extract")`.

        The function is called as func(ctx, **args) and returns a JSON-able result.
        """
        if phase not in PHASES:
            raise ValueError(f"phase {phase!r} is not one of {PHASES}")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self._specs[name] = TaskSpec(name, func, category, phase, next_task)
            return func

        return register

    def get(self, name: str) -> TaskSpec:
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._specs))
            raise InvalidInput(f"unknown task name {str(name)[:100]!r}: known tasks are {known}") from None
