"""The priority-aware worker (DESIGN sections 4-5).

Fetching: sweep no-wait pulls high -> normal -> low over the consumers in scope, take the
first hit; within a bucket, rotate the starting consumer so categories share it fairly.
When everything is empty, wait for the doorbell (or a safety re-sweep after a few seconds).

Running: claim with a compare-and-set (queued -> running, new lease token), ack the message,
heartbeat the lease while the function runs in a thread, finish fenced on the lease token.
A message whose generation is not the row's current one is dropped with term(), unrun.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from nats.aio.msg import Msg
from sqlalchemy import insert, update

from core.broker import BrokerUnavailable, TaskBroker, TaskMessage, consumer_name
from core.errors import DatabaseUnavailable, InvalidInput
from core.maintenance import reap_expired_leases, reconcile
from core.outbox import due_messages, record_published
from core.priority import BUCKETS_IN_ORDER, PHASES, Bucket
from core.registry import TaskContext, TaskRegistry
from core.settings import Settings
from core.tasks import DispatchRequest, build_task_row, retry_backoff, row_message
from db.engine import Database
from db.models import Task, TaskEffect, TaskStatus, WorkerRecord, utcnow

log = logging.getLogger(__name__)

PRESENCE_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class WorkerScope:
    """Which queues a worker takes from: a high-only pool, an etl.load pool, or everything."""

    buckets: tuple[Bucket, ...] = BUCKETS_IN_ORDER
    categories: tuple[str, ...] = ()  # empty: every configured category
    phases: tuple[str, ...] = ()  # empty: every phase

    def consumers_by_bucket(self, settings: Settings) -> list[list[str]]:
        categories = self.categories or settings.categories
        phases = self.phases or PHASES
        ordered = [b for b in BUCKETS_IN_ORDER if b in self.buckets]
        return [[consumer_name(c, p, b) for c in categories for p in phases] for b in ordered]

    def describe(self) -> str:
        return (
            f"buckets={','.join(b.value for b in self.buckets)} "
            f"categories={','.join(self.categories) or '*'} phases={','.join(self.phases) or '*'}"
        )


@dataclass
class Claimed:
    id: str
    name: str
    args: dict[str, Any]
    priority: int
    category: str
    phase: str
    correlation_id: str | None
    generation: int
    attempts: int
    max_attempts: int
    lease_token: str


@dataclass
class Outcome:
    ok: bool
    result: Any = None
    error: str | None = None


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped: int = 0


def claim_task(
    db: Database, message: TaskMessage, stream_seq: int | None, worker_id: str, lease: timedelta
) -> Claimed | None:
    """queued -> running for exactly this generation, or None if the message is stale."""
    token = os.urandom(16).hex()
    now = utcnow()
    with db.session(write=True) as session:
        row = session.execute(
            update(Task)
            .where(Task.id == message.task_id, Task.generation == message.generation, Task.status == TaskStatus.QUEUED)
            .values(
                status=TaskStatus.RUNNING,
                lease_token=token,
                lease_expires_at=now + lease,
                attempts=Task.attempts + 1,
                started_at=now,
                worker_id=worker_id,
                publish_due_at=None,
                published_generation=message.generation,
                stream_seq=stream_seq,
            )
            .returning(
                Task.id,
                Task.name,
                Task.args,
                Task.priority,
                Task.category,
                Task.phase,
                Task.correlation_id,
                Task.generation,
                Task.attempts,
                Task.max_attempts,
            )
            .execution_options(synchronize_session=False)
        ).first()
    if row is None:
        return None
    return Claimed(*row, lease_token=token)


def extend_lease(db: Database, claimed: Claimed, lease: timedelta) -> bool:
    with db.session(write=True) as session:
        return (
            session.execute(
                update(Task)
                .where(
                    Task.id == claimed.id, Task.lease_token == claimed.lease_token, Task.status == TaskStatus.RUNNING
                )
                .values(lease_expires_at=utcnow() + lease)
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )


def finish_task(
    db: Database,
    settings: Settings,
    registry: TaskRegistry,
    claimed: Claimed,
    ctx: TaskContext,
    outcome: Outcome,
    worker_id: str,
) -> list[TaskMessage] | None:
    """Record the outcome, fenced on the lease. Returns messages to publish now (the next
    pipeline phase), or None if the lease was lost and the outcome discarded."""
    now = utcnow()
    fence = (Task.id == claimed.id, Task.lease_token == claimed.lease_token, Task.status == TaskStatus.RUNNING)
    released = dict(lease_token=None, lease_expires_at=None)
    follow_up: list[dict] = []
    with db.session(write=True) as session:
        if outcome.ok:
            values = dict(status=TaskStatus.SUCCEEDED, result=outcome.result, error=None, finished_at=now, **released)
        elif claimed.attempts < claimed.max_attempts:
            values = dict(
                status=TaskStatus.QUEUED,
                generation=claimed.generation + 1,
                error=outcome.error,
                queued_at=now,
                publish_due_at=now + retry_backoff(settings, claimed.attempts),
                **released,
            )
        else:
            values = dict(status=TaskStatus.FAILED, error=outcome.error, finished_at=now, **released)
        changed = session.execute(
            update(Task).where(*fence).values(**values).execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            return None
        if outcome.ok:
            if ctx.effects:
                session.execute(
                    insert(TaskEffect),
                    [
                        dict(
                            task_id=claimed.id,
                            generation=claimed.generation,
                            worker_id=worker_id,
                            recorded_at=now,
                            value=value,
                        )
                        for value in ctx.effects
                    ],
                )
            next_task = registry.get(claimed.name).next_task
            if next_task:
                request = DispatchRequest(
                    next_task,
                    args=outcome.result if isinstance(outcome.result, dict) else {"input": outcome.result},
                    priority=claimed.priority,
                    category=claimed.category,
                    phase=registry.get(next_task).phase,
                    correlation_id=claimed.correlation_id,
                )
                follow_up.append(build_task_row(settings, registry, request, now, f"pipeline:{claimed.id}"))
                session.execute(insert(Task), follow_up)
    return [row_message(row) for row in follow_up]


def run_task(registry: TaskRegistry, claimed: Claimed, ctx: TaskContext) -> Outcome:
    try:
        spec = registry.get(claimed.name)
        result = spec.func(ctx, **(claimed.args or {}))
        return Outcome(True, _jsonable(result))
    except Exception as error:
        log.info("task %s (%s) failed: %s", claimed.id, claimed.name, error)
        last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
        where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        return Outcome(False, error=f"{type(error).__name__}: {error}{where}"[:4000])


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:4000]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: TaskRegistry,
        broker_url: str,
        *,
        scope: WorkerScope = WorkerScope(),
        concurrency: int = 1,
        maintenance: bool = True,
        worker_id: str | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ):
        if concurrency < 1:
            raise InvalidInput("concurrency must be at least 1")
        self.settings = settings
        self.db = db
        self.registry = registry
        self.broker = TaskBroker(settings, broker_url)
        self.scope = scope
        self.concurrency = concurrency
        self.maintenance = maintenance
        self.id = worker_id or new_worker_id()
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.stats = WorkerStats()
        self._on_event = on_event
        self._consumers = scope.consumers_by_bucket(settings)
        self._rotation = [0] * len(self._consumers)
        self._running: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._relay_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._db_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="worker-db")
        self._task_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="worker-task")

    # -- life cycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        await self.broker.connect(retry_forever=True, name=f"switchyard worker {self.id}")
        while True:
            try:
                await self.broker.ensure_topology()
                break
            except BrokerUnavailable as error:
                log.warning("%s; retrying", error)
                if await self._sleep(1.0):
                    return
        await self.broker.subscribe_doorbell(self._wake.set)
        await self._in_db(self._register)
        loops = [asyncio.create_task(self._presence_loop())]
        if self.maintenance:
            loops += [
                asyncio.create_task(self._every(self.settings.relay_interval_seconds, self._relay, self._relay_now)),
                asyncio.create_task(self._every(self.settings.reaper_interval_seconds, self._reap)),
                asyncio.create_task(self._every(self.settings.reconcile_interval_seconds, self._reconcile)),
            ]
        log.info("worker %s started: %s concurrency=%d", self.id, self.scope.describe(), self.concurrency)
        try:
            await self._fetch_loop()
        finally:
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                await self._in_db(self._unregister)
            except DatabaseUnavailable:
                pass
            await self.broker.close()
            self._db_pool.shutdown(wait=False)
            self._task_pool.shutdown(wait=False)
            log.info("worker %s stopped", self.id)

    # -- fetching ---------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while not self._stop.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._wait_any(self._slot_freed, self._stop)
                continue
            self._wake.clear()
            try:
                messages = await self._sweep(free)
            except BrokerUnavailable as error:
                log.warning("%s; retrying", error)
                await self._sleep(0.5)
                continue
            if not messages:
                await self._wait_any(self._wake, self._stop, timeout=self.settings.idle_resweep_seconds)
                continue
            for msg in messages:
                task = asyncio.create_task(self._handle(msg))
                self._running.add(task)
                task.add_done_callback(self._finished)

    async def _sweep(self, batch: int) -> list[Msg]:
        """The first non-empty consumer in bucket order; fair across consumers in a bucket."""
        for index, consumers in enumerate(self._consumers):
            start = self._rotation[index]
            for offset in range(len(consumers)):
                position = (start + offset) % len(consumers)
                messages = await self.broker.pull_no_wait(consumers[position], batch)
                if messages:
                    self._rotation[index] = (position + 1) % len(consumers)
                    return messages
        return []

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: unexpected error handling a message", self.id, exc_info=task.exception())

    # -- running one task -------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        try:
            message = TaskMessage.decode(msg)
        except InvalidInput as error:
            log.warning("%s: dropped", error)
            await self._settle(msg.term)
            return
        try:
            seq = msg.metadata.sequence.stream
        except Exception:
            seq = None
        try:
            claimed = await self._in_db(claim_task, self.db, message, seq, self.id, self.lease)
        except DatabaseUnavailable as error:
            log.warning("%s; message for task %s returned to the queue", error, message.task_id)
            await self._settle(msg.nak, delay=2)
            await self._sleep(1.0)
            return
        if claimed is None:
            self.stats.dropped += 1
            await self._settle(msg.term)
            self._emit("dropped", message.task_id)
            return
        await self._settle(msg.ack)
        self.stats.claimed += 1
        self._emit("started", claimed.id)
        ctx = TaskContext(
            task_id=claimed.id,
            generation=claimed.generation,
            attempt=claimed.attempts,
            priority=claimed.priority,
            correlation_id=claimed.correlation_id,
            worker_id=self.id,
        )
        heartbeat = asyncio.create_task(self._heartbeat(claimed))
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._task_pool, run_task, self.registry, claimed, ctx
            )
        finally:
            heartbeat.cancel()
        follow_up = await self._finish(claimed, ctx, outcome)
        if follow_up is None:
            log.warning("task %s: lease lost before it finished; its outcome was discarded", claimed.id)
            return
        if outcome.ok:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        self._emit("succeeded" if outcome.ok else "failed", claimed.id)
        if follow_up:
            await self._publish(follow_up)

    @staticmethod
    async def _settle(how: Callable, **options: Any) -> None:
        """ack / term / nak. If the broker does not hear it, the message comes back after
        ack_wait and the claim's compare-and-set drops it: nothing runs twice."""
        try:
            await how(**options)
        except Exception as error:
            log.info("message not settled (%s): %s", how.__name__, error)

    async def _finish(self, claimed: Claimed, ctx: TaskContext, outcome: Outcome) -> list[TaskMessage] | None:
        """Keep trying while the database is away, until the lease would have run out."""
        deadline = asyncio.get_running_loop().time() + self.settings.lease_seconds
        delay = 0.2
        while True:
            try:
                return await self._in_db(
                    finish_task, self.db, self.settings, self.registry, claimed, ctx, outcome, self.id
                )
            except DatabaseUnavailable as error:
                if asyncio.get_running_loop().time() > deadline:
                    log.error("task %s: %s; giving the task back to the reaper", claimed.id, error)
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _heartbeat(self, claimed: Claimed) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._in_db(extend_lease, self.db, claimed, self.lease):
                    log.warning("task %s: lease lost (reaped or finished elsewhere)", claimed.id)
                    return
            except DatabaseUnavailable as error:
                log.warning("task %s: lease not extended: %s", claimed.id, error)

    async def _publish(self, messages: list[TaskMessage]) -> None:
        try:
            results = await self.broker.publish(messages)
            await self._in_db(record_published, self.db, results)
        except (BrokerUnavailable, DatabaseUnavailable) as error:
            log.warning("%s; the relay will publish %d task(s)", error, len(messages))

    # -- maintenance ------------------------------------------------------------------------

    async def _relay(self) -> None:
        while True:
            due = await self._in_db(due_messages, self.db)
            if not due:
                return
            results = await self.broker.publish(due)
            await self._in_db(record_published, self.db, results)
            if len(due) < 1000 or any(isinstance(r, Exception) for r in results):
                return

    async def _reap(self) -> None:
        requeued, failed = await self._in_db(reap_expired_leases, self.db)
        if requeued or failed:
            log.warning("reaper: %d task(s) requeued, %d failed after their last attempt", requeued, failed)
        if requeued:
            self._relay_now.set()

    async def _reconcile(self) -> None:
        requeued = await reconcile(self.db, self.broker, self._in_db)
        if requeued:
            log.warning("reconciler: %d queued task(s) had no message in the stream; requeued", requeued)
            self._relay_now.set()

    async def _every(self, interval: float, step: Callable, early: asyncio.Event | None = None) -> None:
        while not self._stop.is_set():
            try:
                await step()
            except (BrokerUnavailable, DatabaseUnavailable) as error:
                log.warning("%s: %s", step.__name__.strip("_"), error)
            except Exception:
                log.exception("%s failed", step.__name__.strip("_"))
            if early is not None:
                early.clear()
                await self._wait_any(early, self._stop, timeout=interval)
            else:
                await self._sleep(interval)

    # -- presence ---------------------------------------------------------------------------

    def _register(self) -> None:
        now = utcnow()
        with self.db.session(write=True) as session:
            session.merge(
                WorkerRecord(
                    id=self.id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    buckets=",".join(b.value for b in self.scope.buckets),
                    scope=self.scope.describe(),
                    concurrency=self.concurrency,
                    started_at=now,
                    last_seen_at=now,
                    tasks_run=0,
                )
            )

    def _touch(self) -> None:
        with self.db.session(write=True) as session:
            session.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == self.id)
                .values(last_seen_at=utcnow(), tasks_run=self.stats.succeeded + self.stats.failed)
            )

    def _unregister(self) -> None:
        with self.db.session(write=True) as session:
            session.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == self.id)
                .values(stopped_at=utcnow(), last_seen_at=utcnow(), tasks_run=self.stats.succeeded + self.stats.failed)
            )

    async def _presence_loop(self) -> None:
        while not self._stop.is_set():
            if await self._sleep(PRESENCE_INTERVAL_SECONDS):
                return
            try:
                await self._in_db(self._touch)
            except DatabaseUnavailable as error:
                log.warning("presence not updated: %s", error)

    # -- helpers ----------------------------------------------------------------------------

    async def _in_db(self, function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db_pool, function, *args)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True if stopping."""
        await self._wait_any(self._stop, timeout=seconds)
        return self._stop.is_set()

    @staticmethod
    async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _emit(self, event: str, task_id: str) -> None:
        if self._on_event is not None:
            self._on_event(event, task_id)


class WorkerThread:
    """A worker on its own thread and event loop, inside the serve process."""

    def __init__(self, worker):
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=f"worker-{worker.id}", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.worker.run())

    def start(self) -> "WorkerThread":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout=15)
