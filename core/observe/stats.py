"""Queue statistics: what is waiting in JetStream, and what the database knows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from core.auth.permissions import Permission
from core.auth.policy import authorize
from core.broker.jetstream import BrokerThread, TaskBroker
from core.errors import BrokerUnavailable
from core.priority import BUCKETS_IN_ORDER
from core.timefmt import iso
from db.engine import Database
from db.models import TaskStatus, utcnow
from db.queries import outbox
from db.queries import stats as queries
from db.queries import workers as worker_queries

WORKER_ONLINE_WINDOW = timedelta(seconds=15)
WORKER_DIED_WINDOW = timedelta(hours=1)
THROUGHPUT_WINDOW = timedelta(hours=1)
THROUGHPUT_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def bucket_totals(subject_counts: dict[str, int]) -> dict[str, int]:
    totals = {bucket.value: 0 for bucket in BUCKETS_IN_ORDER}
    for subject, count in subject_counts.items():
        bucket = subject.rsplit(".", 1)[-1]
        if bucket in totals:
            totals[bucket] += count
    return totals


async def broker_depths(broker: TaskBroker) -> dict[str, Any]:
    """Messages waiting per subject and per bucket, from one stream_info call."""
    subjects = await broker.subject_counts()
    return {"buckets": bucket_totals(subjects), "subjects": dict(sorted(subjects.items()))}


def database_stats(db: Database) -> dict[str, Any]:
    """Counts by status, and per bucket and per cell the number queued and the oldest's age."""
    now = utcnow()
    with db.reading() as session:
        by_status = queries.count_by_status(session)
        cells = queries.queued_cells(session)
        newest = queries.newest_created_at(session)
    buckets: dict[str, dict[str, Any]] = {b.value: {"queued": 0, "oldest_age_seconds": None} for b in BUCKETS_IN_ORDER}
    matrix = []
    for category, phase, bucket, count, oldest in cells:
        age = (now - oldest).total_seconds() if oldest else None
        matrix.append(
            {"category": category, "phase": phase, "bucket": bucket, "queued": count, "oldest_age_seconds": age}
        )
        entry = buckets.setdefault(bucket, {"queued": 0, "oldest_age_seconds": None})
        entry["queued"] += count
        if age is not None and (entry["oldest_age_seconds"] is None or age > entry["oldest_age_seconds"]):
            entry["oldest_age_seconds"] = age
    return {
        "status": {status: by_status.get(status, 0) for status in TaskStatus.ALL},
        "buckets": buckets,
        "cells": matrix,
        "newest_created_at": iso(newest),
    }


def queue_depths(db: Database, broker: BrokerThread | None, actor: object, *, broker_error: str | None = None,
                 address: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Messages waiting per bucket and subject (the broker) and the database's counts, for a
    user who may view the dashboard."""
    authorize(db, actor, Permission.VIEW_DASHBOARD, action="depths.view", address=address, doing="view queue depths")
    return system_depths(db, broker, broker_error=broker_error)


def system_depths(db: Database, broker: BrokerThread | None, *, broker_error: str | None = None) -> dict[str, Any]:
    """queue_depths for a trusted caller (the command line)."""
    if broker is None:
        raise BrokerUnavailable(broker_error or "broker unavailable")
    depths = broker.run(broker_depths(broker.broker))
    depths["database"] = database_stats(db)
    return depths


def throughput_last_hour(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """Tasks finished per minute over the hour up to `now`, by outcome, counted in SQL.

    {'start', 'end' (aware UTC: the chart's fixed range, now - 60 min .. now),
     'minutes': [start of each minute bin, oldest first, every bin present],
     'succeeded': [count per bin], 'failed': [count per bin]}
    """
    now = now or utcnow()
    start = now - THROUGHPUT_WINDOW
    first = start.replace(second=0, microsecond=0)
    minutes = [first + timedelta(minutes=i) for i in range(int((now - first).total_seconds() // 60) + 1)]
    counts = {status: [0] * len(minutes) for status in THROUGHPUT_STATUSES}
    with db.reading() as session:
        rows = queries.finished_per_minute(session, start, now)
    for at, status, count in rows:
        if status not in counts:
            continue  # cancelled rows (few)
        index = int((at - first).total_seconds() // 60)
        if 0 <= index < len(minutes):
            counts[status][index] += count
    return {
        "start": start.isoformat(),
        "end": now.isoformat(),
        "minutes": [m.isoformat() for m in minutes],
        **counts,
    }


def workers_died(db: Database) -> list[dict[str, Any]]:
    """Workers that died of an error they did not handle in the last hour (the latest first)."""
    with db.reading() as session:
        workers = worker_queries.died_since(session, utcnow() - WORKER_DIED_WINDOW)
    return [{"id": w.id, "scope": w.scope, "stopped_at": iso(w.stopped_at), "error": w.exit_error} for w in workers]


def workers_online(db: Database) -> list[dict[str, Any]]:
    with db.reading() as session:
        workers = worker_queries.seen_since(session, utcnow() - WORKER_ONLINE_WINDOW)
    return [
        {
            "id": w.id,
            "hostname": w.hostname,
            "pid": w.pid,
            "scope": w.scope,
            "concurrency": w.concurrency,
            "tasks_run": w.tasks_run,
            "last_seen_at": w.last_seen_at.isoformat(),
        }
        for w in workers
    ]


def relay_backlog(db: Database) -> int:
    """Rows that owe the stream a message and are past their due time (the relay's work)."""
    with db.reading() as session:
        return outbox.backlog(session, utcnow())
