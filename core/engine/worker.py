"""The priority-aware worker (docs/architecture.md, "How a task moves").

A worker runs `concurrency` slots. Each slot loops: take the next messages (core.engine.fetching:
highest bucket first, fair inside a bucket; for short tasks, the held messages of that bucket
that will start within a few ms), claim them with a compare-and-set each (queued -> running,
a new lease token per row) in the same transaction that records the slot's previous outcomes,
ack them, and run them one after another on a task thread while a heartbeat extends the running
task's lease. Outcomes are fenced on the lease token, so a worker whose lease was reaped
meanwhile cannot overwrite anything. A message whose generation is not the row's current one
fails its claim and is dropped with term(), unrun. Claimed tasks that have not started
HAND_BACK_SECONDS after their batch began are handed back to the queue, unstarted.

Transactions from all slots go through one GroupCommit: a busy worker commits once for
several batches, an idle one at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Callable, Sequence

from core.broker.jetstream import TaskBroker
from core.broker.messages import Msg, TaskMessage, consumer_name, stream_sequence
from core.engine import presence
from core.engine.fetching import HOLD_SECONDS, MessageSource
from core.engine.group_commit import GroupCommit
from core.engine.leases import (
    Claimed,
    Finished,
    claim_all,
    describe_failure,
    extend_lease,
    hand_back,
    record_outcomes,
    run_task,
)
from core.engine.maintenance import reap_expired_leases, reconcile
from core.errors import BrokerUnavailable, DatabaseUnavailable, InvalidInput
from core.observe import logs, metrics
from core.priority import BUCKETS_IN_ORDER, PHASES, Bucket, parse_bucket, subject_parts
from core.settings import Settings
from core.tasks.outbox import RELAY_BATCH, due_messages, record_published
from core.tasks.registry import TaskContext, TaskRegistry
from db.engine import Database
from db.models import utcnow

log = logging.getLogger(__name__)

RESTART_MAX_SECONDS = 60.0
HAND_BACK_SECONDS = 0.05
FOLLOW_INTERVAL_SECONDS = 2.0


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
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped: int = 0


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
        url_source: Callable[[], str | None] | None = None,
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
        self.id = worker_id or presence.new_worker_id()
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.stats = WorkerStats()
        self._on_event = on_event
        # Where the broker is now, for a worker that found it through the data folder: when the
        # connection is lost and the broker came back elsewhere, the worker stops with moved_to
        # set, and its process starts a new one there.
        self._url_source = url_source
        self.moved_to: str | None = None
        self.source = MessageSource(
            self.broker,
            scope.consumers_by_bucket(settings),
            settings.idle_resweep_seconds,
            settings.worker_prefetch,
        )
        self._relay_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._db_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="worker-db")
        self._task_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="worker-task")
        self._writes = GroupCommit(db, self._db_pool)

    # -- life cycle -------------------------------------------------------------------------

    def fresh(self) -> "Worker":
        """A new worker like this one (a new id, a new connection), to take its place."""
        return Worker(
            self.settings,
            self.db,
            self.registry,
            self.broker.url,
            scope=self.scope,
            concurrency=self.concurrency,
            maintenance=self.maintenance,
            on_event=self._on_event,
            url_source=self._url_source,
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        logs.bind(worker_id=self.id)
        await self.broker.connect(retry_forever=True, name=f"switchyard worker {self.id}", url_source=self._url_source)
        while True:
            try:
                await self.broker.ensure_topology()
                break
            except BrokerUnavailable as error:
                log.warning("%s; retrying", error)
                if await self._sleep(1.0):
                    return
        await self.broker.subscribe_doorbell(self.source.doorbell)
        await self._in_db(self._register)
        loops = [
            asyncio.create_task(self._presence_loop()),
            asyncio.create_task(self._every(HOLD_SECONDS / 2, self._hand_back_held)),
            asyncio.create_task(self._every(FOLLOW_INTERVAL_SECONDS, self._follow_broker)),
        ]
        if self.maintenance:
            loops += [
                asyncio.create_task(self._every(self.settings.relay_interval_seconds, self._relay, self._relay_now)),
                asyncio.create_task(self._every(self.settings.reaper_interval_seconds, self._reap)),
                asyncio.create_task(
                    self._every(
                        self.settings.reconcile_interval_seconds, self._reconcile, self.broker.topology_restored
                    )
                ),
            ]
        log.info("worker %s started: %s concurrency=%d", self.id, self.scope.describe(), self.concurrency)
        try:
            await asyncio.gather(*(self._slot() for _ in range(self.concurrency)))
        finally:
            await self.source.release(older_than=0)
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

    # -- one slot ---------------------------------------------------------------------------

    async def _slot(self) -> None:
        """Run tasks until the worker stops. A slot claims the messages it takes in one
        transaction, which also records the outcomes of the tasks it ran before (or they are
        recorded alone, when there is nothing to claim)."""
        finished: list[Finished] = []
        while True:
            msgs: list[Msg] = []
            ticket = 0
            if not self._stop.is_set():
                msgs, ticket = await self._next_messages(self.source.claim_ahead())
            if not msgs:
                if finished:
                    await self._record_alone(finished)
                    finished = []
                    continue
                if self._stop.is_set():
                    return
                await self.source.wait(ticket, self._stop)
                continue
            taken = await self._decode(msgs)
            if not taken:
                continue
            work = partial(self._finish_and_claim, finished, [(message, seq) for _, message, seq in taken])
            try:
                recorded, claims = await self._writes.run(work)
            except DatabaseUnavailable as error:
                log.warning("%s; %d message(s) returned to the queue", error, len(taken))
                await self._settle_all([msg.nak for msg, _, _ in taken], delay=2)
                await self._record_alone(finished)
                finished = []
                await self._sleep(1.0)
                continue
            except Exception:
                # An outcome (or a claim) could not be written for a reason of its own: the
                # messages go back to the queue, each outcome is tried alone, the slot goes on.
                log.exception("a write failed; %d message(s) returned to the queue", len(taken))
                await self._settle_all([msg.nak for msg, _, _ in taken], delay=1)
                await self._record_alone(finished)
                finished = []
                continue
            for item, was_recorded in zip(finished, recorded):
                await self._recorded(item, was_recorded)
            batch: list[Claimed] = []
            settles: list[Callable] = []
            for (msg, message, _), claimed in zip(taken, claims):
                if claimed is None:
                    self.stats.dropped += 1
                    settles.append(msg.term)
                    self._emit("dropped", message.task_id)
                else:
                    settles.append(msg.ack)  # from here the database lease owns the task
                    batch.append(claimed)
            await self._settle_all(settles)
            self.stats.claimed += len(batch)
            finished = await self._run_batch(batch)

    async def _next_messages(self, most: int) -> tuple[list[Msg], int]:
        while True:
            try:
                return await self.source.next(most)
            except BrokerUnavailable as error:
                log.warning("%s; retrying", error)
                if await self._sleep(0.5):
                    return [], 0

    async def _decode(self, msgs: list[Msg]) -> list[tuple[Msg, TaskMessage, int | None]]:
        taken = []
        for msg in msgs:
            try:
                taken.append((msg, TaskMessage.decode(msg), stream_sequence(msg)))
            except InvalidInput as error:
                log.warning("%s: dropped", error)
                await self._settle(msg.term)
        return taken

    def _finish_and_claim(
        self, finished: list[Finished], messages: list[tuple[TaskMessage, int | None]], connection
    ) -> tuple[list[bool], list[Claimed | None]]:
        now = utcnow()
        recorded = record_outcomes(connection, self.settings, self.registry, finished, self.id, now)
        return recorded, claim_all(connection, messages, self.id, self.lease, now)

    async def _run_batch(self, claims: list[Claimed]) -> list[Finished]:
        """Run claimed tasks one after another, on one task thread. Claiming ahead is bounded
        in time: the tasks not started when the batch has run HAND_BACK_SECONDS (a slow task
        among short ones, or the worker stopping) are handed back to the queue unstarted, their
        attempt not counted, so they can still be upgraded or cancelled and another slot can
        take them."""
        batch = ClaimedBatch(claims, asyncio.get_running_loop().time() + HAND_BACK_SECONDS, self._stop)
        heartbeat = asyncio.create_task(self._heartbeat(batch))
        try:
            running = asyncio.ensure_future(self._in_thread(self._task_pool, self._run_claimed, batch))
            if len(claims) > 1 and not (await asyncio.wait({running}, timeout=HAND_BACK_SECONDS))[0]:
                await self._hand_back(batch.close())
            finished = await running
        finally:
            heartbeat.cancel()
        await self._hand_back(batch.close())
        return finished

    def _run_claimed(self, batch: "ClaimedBatch") -> list[Finished]:
        """On a task thread: the batch's tasks, until it is done or closed."""
        finished = []
        while (claimed := batch.take()) is not None:
            metrics.QUEUE_WAIT.labels(claimed.bucket).observe(max((utcnow() - claimed.queued_at).total_seconds(), 0))
            self._emit("started", claimed.id)
            ctx = TaskContext(
                task_id=claimed.id,
                generation=claimed.generation,
                attempt=claimed.attempts,
                priority=claimed.priority,
                correlation_id=claimed.correlation_id,
                worker_id=self.id,
            )
            started = time.monotonic()
            with logs.bound(task_id=claimed.id):
                outcome = run_task(self.registry, claimed, ctx)
            seconds = time.monotonic() - started
            self.source.observe_run(seconds)
            metrics.RUN_TIME.labels(claimed.bucket).observe(seconds)
            finished.append(Finished(claimed, ctx, outcome))
        return finished

    async def _hand_back(self, claims: list[Claimed]) -> None:
        if not claims:
            return
        now = utcnow()
        try:
            messages = await self._write_while_leases_hold(
                lambda connection: [hand_back(connection, c, now) for c in claims]
            )
        except DatabaseUnavailable as error:
            log.error("%d claimed task(s) not handed back: %s; the reaper takes them", len(claims), error)
            return
        except Exception:
            log.exception("%d claimed task(s) not handed back; the reaper takes them", len(claims))
            return
        self.stats.claimed -= len(claims)
        published = [m for m in messages if m is not None]
        for message in published:
            self._emit("handed_back", message.task_id)
        await self._publish(published)

    async def _record_alone(self, finished: list[Finished], *, fallback: bool = True) -> None:
        """Record outcomes with no claim to share the transaction, all in one. While the database
        is away, keep trying until a lease would have run out (then the reaper takes the tasks
        back). If one outcome cannot be written for a reason of its own, each is tried alone,
        and one that still cannot is replaced by a plain failure."""
        if not finished:
            return
        try:
            recorded = await self._write_while_leases_hold(partial(self._record_outcomes, finished))
        except DatabaseUnavailable as error:
            log.error("%d outcome(s) not recorded: %s; the reaper takes the tasks", len(finished), error)
            return
        except Exception as error:
            if len(finished) > 1:
                for item in finished:
                    await self._record_alone([item])
                return
            task_id = finished[0].claimed.id
            log.exception("task %s: its outcome could not be recorded", task_id, extra={"task_id": task_id})
            if fallback:
                await self._record_alone([finished[0].unstorable(error)], fallback=False)
            return
        for item, was_recorded in zip(finished, recorded):
            await self._recorded(item, was_recorded)

    def _record_outcomes(self, finished: list[Finished], connection) -> list[bool]:
        return record_outcomes(connection, self.settings, self.registry, finished, self.id, utcnow())

    async def _write_while_leases_hold(self, work: Callable) -> Any:
        """Run `work` in the next shared transaction. While the database is away, try again with
        a growing pause until a lease taken now would have run out; then raise its error."""
        deadline = asyncio.get_running_loop().time() + self.settings.lease_seconds
        delay = 0.2
        while True:
            try:
                return await self._writes.run(work)
            except DatabaseUnavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _recorded(self, finished: Finished, recorded: bool) -> None:
        if not recorded:
            log.warning(
                "task %s: lease lost before it finished; its outcome was discarded",
                finished.claimed.id,
                extra={"task_id": finished.claimed.id},
            )
            return
        claimed = finished.claimed
        if finished.outcome.ok:
            self.stats.succeeded += 1
            metrics.COMPLETED.labels(claimed.bucket).inc()
        else:
            self.stats.failed += 1
            if claimed.attempts < claimed.max_attempts:
                metrics.RETRIED.labels("automatic").inc()
            else:
                metrics.FAILED.labels(claimed.bucket).inc()
        self._emit("succeeded" if finished.outcome.ok else "failed", claimed.id)
        if finished.follow_up:
            for message in finished.follow_up:
                category, _, bucket = subject_parts(message.subject)
                metrics.DISPATCHED.labels(category, bucket).inc()
            await self._publish(finished.follow_up)

    @classmethod
    async def _settle_all(cls, hows: list[Callable], **options: Any) -> None:
        for how in hows:
            await cls._settle(how, **options)

    @staticmethod
    async def _settle(how: Callable, **options: Any) -> None:
        """ack / term / nak. If the broker does not hear it, the message comes back after
        ack_wait and the claim's compare-and-set drops it: nothing runs twice."""
        try:
            await how(**options)
        except Exception as error:
            log.info("message not settled (%s): %s", how.__name__, error)

    async def _heartbeat(self, batch: "ClaimedBatch") -> None:
        """Extend the lease of the batch's running task every third of a lease."""
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            claimed = batch.running
            if claimed is None:
                continue
            try:
                if not await self._writes.run(partial(self._extend, claimed)):
                    log.info(
                        "task %s: lease no longer held (finished or reaped)", claimed.id, extra={"task_id": claimed.id}
                    )
            except DatabaseUnavailable as error:
                log.warning("task %s: lease not extended: %s", claimed.id, error, extra={"task_id": claimed.id})
            except Exception:
                log.exception("task %s: lease not extended", claimed.id, extra={"task_id": claimed.id})

    def _extend(self, claimed: Claimed, connection) -> bool:
        return extend_lease(connection, claimed, self.lease, utcnow())

    async def _publish(self, messages: list[TaskMessage]) -> None:
        try:
            results = await self.broker.publish(messages)
            await self.broker.discard(await self._in_db(record_published, self.db, results))
        except (BrokerUnavailable, DatabaseUnavailable) as error:
            log.warning("%s; the relay will publish %d task(s)", error, len(messages))

    async def _follow_broker(self) -> None:
        if self._url_source is None or self.broker.connected:
            return
        url = self._url_source()
        if url and url != self.broker.url:
            log.warning(
                "the broker moved from %s to %s: this worker stops for one connected there", self.broker.url, url
            )
            self.moved_to = url
            self.stop()

    async def _hand_back_held(self) -> None:
        released = await self.source.release()
        if released:
            log.info("handed %d held message(s) back to the stream for other workers", released)

    # -- maintenance ------------------------------------------------------------------------

    async def _relay(self) -> None:
        while True:
            due = await self._in_db(due_messages, self.db)
            if not due:
                return
            results = await self.broker.publish(due)
            await self.broker.discard(await self._in_db(record_published, self.db, results))
            if len(due) < RELAY_BATCH or any(isinstance(r, Exception) for r in results):
                return

    async def _reap(self) -> None:
        requeued, failed = await self._in_db(reap_expired_leases, self.db)
        metrics.LEASES_EXPIRED.labels("requeued").inc(requeued)
        metrics.LEASES_EXPIRED.labels("failed").inc(failed)
        if requeued or failed:
            log.warning("reaper: %d task(s) requeued, %d failed after their last attempt", requeued, failed)
        if requeued:
            self._relay_now.set()

    async def _reconcile(self) -> None:
        await self._in_db(self.db.refresh_statistics)
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
        buckets = ",".join(b.value for b in self.scope.buckets)
        presence.register(self.db, self.id, buckets, self.scope.describe(), self.concurrency)

    def _touch(self) -> None:
        presence.touch(self.db, self.id, self.stats.succeeded + self.stats.failed)

    def _unregister(self) -> None:
        presence.touch(self.db, self.id, self.stats.succeeded + self.stats.failed, stopped=True)

    async def _presence_loop(self) -> None:
        while not self._stop.is_set():
            if await self._sleep(presence.PRESENCE_INTERVAL_SECONDS):
                return
            try:
                await self._in_db(self._touch)
            except DatabaseUnavailable as error:
                log.warning("presence not updated: %s", error)

    # -- helpers ----------------------------------------------------------------------------

    async def _in_db(self, function: Callable, *args: Any) -> Any:
        return await self._in_thread(self._db_pool, function, *args)

    @staticmethod
    async def _in_thread(pool: ThreadPoolExecutor, function: Callable, *args: Any) -> Any:
        """Run on a pool thread with this task's log context (executors do not carry it)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(pool, context.run, function, *args)

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


class ClaimedBatch:
    """Tasks a slot claimed together, taken one by one by the task thread that runs them. The
    thread takes no more once the deadline (event-loop time) has passed or the worker stops;
    close() ends the batch from the loop and returns the tasks that were not taken. The deadline
    is in time.monotonic() seconds, which is also the event loop's clock."""

    def __init__(self, claims: list[Claimed], deadline: float, stop: asyncio.Event):
        self._claims = claims
        self._next = 0
        self._deadline = deadline
        self._stop = stop
        self._lock = threading.Lock()
        self.running: Claimed | None = None

    def take(self) -> Claimed | None:
        with self._lock:
            late = self._next > 0 and (time.monotonic() > self._deadline or self._stop.is_set())
            if late or self._next >= len(self._claims):
                self.running = None
                return None
            self.running = self._claims[self._next]
            self._next += 1
            return self.running

    def close(self) -> list[Claimed]:
        with self._lock:
            rest, self._next = self._claims[self._next :], len(self._claims)
            return rest


class WorkerThread:
    """A worker on its own thread and event loop, inside the serve process.

    With `restart`, a worker that dies of an error it did not handle is recorded as died (the
    overview shows it) and a new one takes its place after a pause that grows from 1 s to
    RESTART_MAX_SECONDS while it keeps dying, and starts over once one has run for a minute."""

    def __init__(self, worker: "Worker", *, restart: bool = False):
        self.worker = worker
        self.restart = restart
        self.restarts = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=f"worker-{worker.id}", daemon=True)
        self._stopping = threading.Event()

    def _run(self) -> None:
        pause = 1.0
        while True:
            started = time.monotonic()
            try:
                self.loop.run_until_complete(self.worker.run())
                return
            except BaseException as error:
                if not self.restart or self._stopping.is_set():
                    log.exception("worker %s died", self.worker.id)
                    return
                pause = 1.0 if time.monotonic() - started > 60 else pause
                log.exception("worker %s died; a new one starts in %.0f s", self.worker.id, pause)
                try:
                    presence.died(self.worker.db, self.worker.id, describe_failure(error))
                except Exception:
                    log.exception("worker %s: its death could not be recorded", self.worker.id)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, RESTART_MAX_SECONDS)
            self.worker = self.worker.fresh()
            self.restarts += 1

    def start(self) -> "WorkerThread":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout=15)


# -- a worker process's scope (`run.py worker`) -------------------------------------------------------


def worker_scope(
    settings: Settings, buckets: str, categories: Sequence[str], phases: Sequence[str], concurrency: int
) -> WorkerScope:
    """The scope of a worker process from its command-line values, checked."""
    chosen = tuple(dict.fromkeys(parse_bucket(b) for b in buckets.split(",") if b.strip()))
    if not chosen:
        raise InvalidInput("--buckets needs at least one of high, normal, low")
    for category in categories:
        if category not in settings.categories:
            raise InvalidInput(f"unknown category {category!r}: use one of {', '.join(settings.categories)}")
    for phase in phases:
        if phase not in PHASES:
            raise InvalidInput(f"unknown phase {phase!r}: use one of {', '.join(PHASES)}")
    if concurrency < 1 or concurrency > 256:
        raise InvalidInput("--concurrency must be from 1 to 256")
    return WorkerScope(chosen, tuple(categories), tuple(phases))
