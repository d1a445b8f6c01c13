"""Queue statistics: what is waiting in JetStream, and what the database knows."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select

from core.broker import TaskBroker
from core.priority import BUCKETS_IN_ORDER
from db.engine import Database
from db.models import Task, TaskStatus, status_is, utcnow


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
    with db.session() as session:
        by_status = dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())
        cells = session.execute(
            select(Task.category, Task.phase, Task.bucket, func.count(), func.min(Task.queued_at))
            .where(status_is(TaskStatus.QUEUED))
            .group_by(Task.category, Task.phase, Task.bucket)
        ).all()
    buckets = {b.value: {"queued": 0, "oldest_age_seconds": None} for b in BUCKETS_IN_ORDER}
    matrix = []
    for category, phase, bucket, count, oldest in cells:
        age = (now - _aware(oldest)).total_seconds() if oldest else None
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
    }


def _aware(value: datetime | str) -> datetime:
    """SQLite's MIN() over a UTC column comes back naive, or as a string."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
