"""Logging for every process: one JSON object per line (or plain text for a person at a terminal).

Context travels in a ContextVar: the web layer binds `request_id` and `user` for a request, a
worker binds `worker_id`, and `task_id` / `user` can be given per record with `extra=`. Every
line carries what is bound, so a request or a task can be followed through web and workers.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import Any, Iterator

CONTEXT_FIELDS = ("request_id", "user", "task_id", "worker_id", "address")
_context: ContextVar[dict[str, Any]] = ContextVar("switchyard_log_context", default={})


def bind(**values: Any) -> Token:
    """Add fields to every record logged from this context until `unbind(token)`."""
    return _context.set({**_context.get(), **{k: v for k, v in values.items() if v is not None}})


def unbind(token: Token) -> None:
    _context.reset(token)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    token = bind(**values)
    try:
        yield
    finally:
        unbind(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context.get())
        for field in CONTEXT_FIELDS + ("method", "path", "status", "duration_ms"):
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = {**_context.get(), **{f: getattr(record, f) for f in CONTEXT_FIELDS if getattr(record, f, None)}}
        return f"{line} [{' '.join(f'{k}={v}' for k, v in context.items())}]" if context else line


def configure(level: int, form: str = "json") -> None:
    """Route the root logger to stderr in the chosen form ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
