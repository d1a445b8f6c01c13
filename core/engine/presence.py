"""Worker presence: each worker keeps a row up to date while it runs, so the console can say
who is working and on what."""

from __future__ import annotations

import os
import socket

from db.engine import Database
from db.models import utcnow
from db.queries import workers

PRESENCE_INTERVAL_SECONDS = 5.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def register(db: Database, worker_id: str, buckets: str, scope: str, concurrency: int) -> None:
    now = utcnow()
    with db.session(write=True) as session:
        workers.register(
            session,
            id=worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            buckets=buckets,
            scope=scope,
            concurrency=concurrency,
            started_at=now,
            last_seen_at=now,
            tasks_run=0,
        )


def died(db: Database, worker_id: str, error: str) -> None:
    """The worker stopped on an error it did not handle: the overview shows it."""
    now = utcnow()
    with db.session(write=True) as session:
        workers.touch(session, worker_id, stopped_at=now, last_seen_at=now, exit_error=error)


def touch(db: Database, worker_id: str, tasks_run: int, *, stopped: bool = False) -> None:
    now = utcnow()
    values = {"last_seen_at": now, "tasks_run": tasks_run}
    if stopped:
        values["stopped_at"] = now
    with db.session(write=True) as session:
        workers.touch(session, worker_id, **values)
