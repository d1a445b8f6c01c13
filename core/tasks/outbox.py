"""Publish after commit (docs/architecture.md, "The invariants", 4).

A row whose `publish_due_at` is set still owes the stream a message for its current
generation. Whoever committed the change publishes straight away; the relay (core.engine)
publishes whatever is still due after a short grace (a crash between commit and publish, a
broker outage, a retry whose backoff has run out).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

from core.broker.jetstream import BrokerThread
from core.broker.messages import Published, TaskMessage
from core.errors import BrokerUnavailable, DatabaseUnavailable
from core.priority import subject_for
from db.engine import Database
from db.models import utcnow
from db.queries import outbox

log = logging.getLogger(__name__)

# How long the relay leaves a fresh row to the process that committed it.
PUBLISH_GRACE = timedelta(seconds=3)
RELAY_BATCH = 1000
# Messages the publisher holds at most; beyond that the relay publishes them from their rows.
MAX_PENDING = 100_000
# How long the publisher waits for more before it records what it published (one transaction).
RECORD_DELAY_SECONDS = 0.02


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


def publish_problem(error: Exception) -> str:
    text = str(error)
    return text if text.startswith("broker unavailable") else f"broker unavailable: {text}"


@dataclass
class _Submission:
    messages: list[TaskMessage]
    done: Future | None  # resolved with why not published (None: published), for callers that wait


class Publisher:
    """Publishes the messages of committed rows off the caller's thread ("accept on commit").

    A dispatch returns once its rows are committed; the publisher, on the broker's event loop,
    takes whatever has been submitted meanwhile, publishes it pipelined, and records the stream
    sequences of up to RELAY_BATCH messages in one transaction. Nothing depends on
    it for safety: a row is published by the relay if its message is not recorded within
    PUBLISH_GRACE (a crash, a broker outage, a full backlog), deduplicated by message id.
    """

    def __init__(self, db: Database, broker: BrokerThread):
        self._db = db
        self._broker = broker
        self._lock = threading.Lock()
        self._queue: list[_Submission] = []
        self._queued = 0
        self._draining = False
        self._idle = threading.Event()
        self._idle.set()
        self._recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publisher-db")
        self.last_error: str | None = None

    def submit(self, messages: list[TaskMessage], *, wait: bool = False) -> Future | None:
        """Queue messages whose rows are committed. With wait, a Future of why they were not
        published (None when they were)."""
        done: Future | None = Future() if wait else None
        refused = self._refusal(len(messages))
        if refused is not None:
            self.last_error = refused
            if done is not None:
                done.set_result(refused)
            return done
        with self._lock:
            self._queue.append(_Submission(messages, done))
            self._queued += len(messages)
            start = not self._draining
            self._draining = True
            self._idle.clear()
        if start:
            self._broker.spawn(self._drain())
        return done

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far has been published and recorded (or given
        up on, for the relay); False if that took longer than timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        self._recorder.shutdown(wait=False)

    def _refusal(self, count: int) -> str | None:
        if not self._broker.broker.connected:
            return "broker unavailable: not connected"
        if self._queued + count > MAX_PENDING:
            return f"more than {MAX_PENDING:,} messages wait to be published"
        return None

    def _take(self) -> list[_Submission]:
        with self._lock:
            taken: list[_Submission] = []
            count = 0
            while self._queue and count < RELAY_BATCH:
                submission = self._queue.pop(0)
                taken.append(submission)
                count += len(submission.messages)
            self._queued -= count
            return taken

    async def _drain(self) -> None:
        unrecorded: list[Published | Exception] = []
        waiting: list[tuple[Future, str | None]] = []  # callers told once their rows are recorded
        try:
            while True:
                taken = self._take()
                if taken:
                    results, problem = await self._publish(taken)
                    unrecorded += results
                    waiting += [(s.done, problem) for s in taken if s.done is not None]
                    if len(unrecorded) < RELAY_BATCH and not waiting:
                        continue  # more may be waiting: record them together
                elif unrecorded and not waiting:
                    # Callers dispatching one task at a time would otherwise cost a write
                    # transaction each: give them a moment to add to this one.
                    await asyncio.sleep(RECORD_DELAY_SECONDS)
                    if self._queued:
                        continue
                if unrecorded:
                    await self._record(unrecorded)
                    unrecorded = []
                    for done, problem in waiting:
                        done.set_result(problem)
                    waiting = []
                    continue
                with self._lock:
                    if self._queue:
                        continue
                    self._draining = False
                    self._idle.set()
                    return
        except BaseException:
            log.exception("the publisher stopped; the relay publishes what it held")
            with self._lock:
                self._queue.clear()
                self._queued = 0
                self._draining = False
                self._idle.set()
            for done, problem in waiting:
                done.set_result(problem)
            raise

    async def _publish(self, taken: list[_Submission]) -> tuple[list[Published | Exception], str | None]:
        """Publish; the results, and why not everything reached the stream (None if it did)."""
        messages = [m for submission in taken for m in submission.messages]
        try:
            results = await self._broker.broker.publish(messages)
        except BrokerUnavailable as error:
            results = [error] * len(messages)
        failures = [r for r in results if isinstance(r, Exception)]
        problem = publish_problem(failures[0]) if failures else None
        self.last_error = problem
        if failures:
            log.warning("%s; %d task(s) kept for the relay", problem, len(failures))
        return results, problem

    async def _record(self, results: list[Published | Exception]) -> None:
        try:
            loop = asyncio.get_running_loop()
            stale = await loop.run_in_executor(self._recorder, record_published, self._db, results)
            await self._broker.broker.discard(stale)
        except (DatabaseUnavailable, BrokerUnavailable) as error:
            log.warning("published but not recorded (%s): the relay will republish, deduplicated", error)
