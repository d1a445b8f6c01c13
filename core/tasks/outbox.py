"""Publish after commit (docs/architecture.md, "The invariants", 4).

A row whose `publish_due_at` is set still owes the stream a message for its current
generation. Whoever committed the change publishes straight away; the relay (core.engine)
publishes whatever is still due after a short grace (a crash between commit and publish, a
broker outage, a retry whose backoff has run out).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Sequence

from core.broker.messages import Published, TaskMessage
from core.priority import subject_for
from db.engine import Database
from db.models import utcnow
from db.queries import outbox

# How long the relay leaves a fresh row to the process that committed it.
PUBLISH_GRACE = timedelta(seconds=3)
RELAY_BATCH = 1000


def record_published(db: Database, results: Sequence[Published | Exception]) -> list[int]:
    """Remember which generation each row had published and at which stream sequence. Returns
    the stream sequences of messages whose row moved on meanwhile (a cancel or an upgrade
    committed between our commit and our publish): the publisher deletes them, so the stream
    never keeps a message for a task that is not queued at that generation."""
    published = [(r.message.task_id, r.message.generation, r.stream_seq) for r in results if isinstance(r, Published)]
    if not published:
        return []
    with db.connect(write=True) as connection:
        stale = outbox.record_published(connection, published)
    return [seq for _, _, seq in stale]


def due_messages(db: Database, limit: int = RELAY_BATCH) -> list[TaskMessage]:
    with db.session() as session:
        rows = outbox.due_rows(session, utcnow(), limit)
    return [TaskMessage(r.id, r.generation, subject_for(r.category, r.phase, r.bucket)) for r in rows]
