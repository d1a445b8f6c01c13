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

    @registry.task("test.hostile", category="webapp")
    def hostile(ctx: TaskContext, recipe: dict | None = None, **_) -> object:
        """Does what `recipe` says with a value JSON cannot carry as such: returns it, raises it,
        records it as an effect. The recipe itself is plain JSON (it went through dispatch)."""
        recipe = recipe or {}
        value = build(recipe.get("value"))
        kind = recipe.get("kind", "return")
        if kind == "effect":
            ctx.record_effect(value)
            return None
        if kind == "raise":
            raise EXCEPTIONS.get(recipe.get("exception"), ValueError)(value)
        if kind == "raise_unprintable":
            raise Unprintable()
        return value

    @registry.task("test.hostile_chain", category="etl", phase="extract", next_task="demo.echo")
    def hostile_chain(ctx: TaskContext, recipe: dict | None = None, **_) -> object:
        """A pipeline phase whose result becomes the next phase's arguments."""
        return build((recipe or {}).get("value"))


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no string for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


EXCEPTIONS: dict = {"ValueError": ValueError, "SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt,
                    "GeneratorExit": GeneratorExit, "BaseException": BaseException}  # fmt: skip


def build(spec: object) -> object:
    """A hostile Python value from a JSON spec: text from any code points (NUL, lone surrogates),
    non-finite numbers, deep nesting, huge text, objects JSON cannot hold."""
    if not isinstance(spec, dict):
        return spec
    if "codepoints" in spec:
        return "".join(chr(c) for c in spec["codepoints"]) * int(spec.get("repeat", 1))
    if "float" in spec:
        return float(spec["float"])  # "nan", "inf", "-inf"
    if "nested" in spec:
        value: object = build(spec.get("leaf"))
        for _ in range(int(spec["nested"])):
            value = {"n": value} if spec.get("as") == "dict" else [value]
        return value
    if "big" in spec:
        return {"blob": "x" * int(spec["big"])} if spec.get("as") == "dict" else "x" * int(spec["big"])
    if "object" in spec:
        return {"set": {1, 2}, "bytes": b"\xff\xfe", "unprintable": Unprintable(), "object": object()}[spec["object"]]
    if "key" in spec:
        return {build(spec["key"]): build(spec.get("leaf"))}
    return {k: build(v) for k, v in spec.items()}
