"""Celery's side of bench_peers.py (runs in .venv-peers): the app, its two tasks, and the four
workloads. `celery -A celery_side worker` imports this module for the worker.

    python celery_side.py enqueue|bulk|drain|latency [options]   (prints one JSON line)

Broker: Redis (BENCH_REDIS_URL, db 1), kombu's Redis transport with queue_order_strategy
"priority" and priority steps 0-9 (priority 0 is served FIRST). No result backend
(task_ignore_result); worker_prefetch_multiplier 1 and task_acks_late, which Celery's docs ask
for when priority matters. A finished no-op is counted by the task's own INCR in Redis.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import redis
from celery import Celery
from side_common import (
    PROBE_SAMPLE,
    LatencySamples,
    StampReceiver,
    idle_gap,
    measure_drain,
    send_stamp,
    side_main,
    spawn,
    stop,
)

REDIS_URL = os.environ["BENCH_REDIS_URL"].rstrip("/") + "/1"
QUEUE = "bench"
DONE_KEY = "bench:done"
URGENT, BACKLOG = 0, 9  # kombu's Redis transport pops priority 0 first
# The latency run's worker polls only the queue's priority-0 list (worker_env sets this).
TOP_PRIORITY_ONLY = os.environ.get("BENCH_CELERY_TOP_PRIORITY_ONLY") == "1"

app = Celery("bench_peers", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "queue_order_strategy": "priority",
        "priority_steps": [URGENT] if TOP_PRIORITY_ONLY else list(range(10)),
    },
)
counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    counter.incr(DONE_KEY)


@app.task(name="bench.stamp")
def stamp(sample: int) -> None:
    send_stamp(sample)


def done() -> int:
    return int(counter.get(DONE_KEY) or 0)


def send_in_batches(calls: list[tuple], batch: int) -> None:
    """apply_async for each (task, options), inside kombu 5.7's Producer.batch(): the publishes
    of one batch go to Redis as one pipeline."""
    with app.producer_or_acquire() as producer:
        for offset in range(0, len(calls), batch):
            with producer.batch(max_size=batch):
                for task, options in calls[offset : offset + batch]:
                    task.apply_async(producer=producer, **options)


def worker_command(concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "celery_side", "worker", "-Q", QUEUE,
        "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "WARNING",
    ]  # fmt: skip


def worker_env(stamp_port: int | None = None, *, top_priority_only: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    if stamp_port is not None:
        env["BENCH_STAMP_PORT"] = str(stamp_port)
    if top_priority_only:
        env["BENCH_CELERY_TOP_PRIORITY_ONLY"] = "1"
    return env


# -- workloads ----------------------------------------------------------------------------------


def run_enqueue(args) -> dict:
    for _ in range(200):  # warm-up: connection, declarations
        noop.apply_async()
    counter.flushdb()
    start = time.perf_counter()
    for _ in range(args.n):
        noop.apply_async()
    seconds = time.perf_counter() - start
    queued = counter.llen(QUEUE)
    if queued != args.n:
        raise RuntimeError(f"{queued} messages in the queue after {args.n} apply_async calls")
    return {"rate": args.n / seconds, "seconds": seconds}


def run_bulk(args) -> dict:
    send_in_batches([(noop, {})] * 200, args.batch)  # warm-up
    counter.flushdb()
    signatures = [(noop, {})] * args.n
    start = time.perf_counter()
    send_in_batches(signatures, args.batch)
    seconds = time.perf_counter() - start
    queued = counter.llen(QUEUE)
    if queued != args.n:
        raise RuntimeError(f"{queued} messages in the queue after a bulk send of {args.n}")
    return {"rate": args.n / seconds, "seconds": seconds}


def run_drain(args) -> dict:
    send_in_batches([(noop, {})] * args.n, 1000)
    log = Path(args.log_dir) / f"celery-drain-c{args.concurrency}.log"
    spawned_at = time.monotonic()
    worker = spawn(worker_command(args.concurrency), log=log, env=worker_env())
    try:
        result = measure_drain(done, args.n, worker, spawned_at, budget=args.budget, log=log)
    finally:
        stop(worker)
    return result


def run_latency(args) -> dict:
    receiver = StampReceiver()
    # The backlog: stamp tasks at the lowest priority, in the same queue (its priority-9 list).
    send_in_batches([(stamp, {"args": (i,), "priority": BACKLOG}) for i in range(args.backlog)], 1000)
    backlog_key = app.connection_for_write().default_channel._q_for_pri(QUEUE, BACKLOG)
    log = Path(args.log_dir) / "celery-latency.log"
    worker = spawn(worker_command(1), log=log, env=worker_env(receiver.port, top_priority_only=True))
    samples = LatencySamples()
    try:
        stamp.apply_async(args=(PROBE_SAMPLE,), priority=URGENT)
        if receiver.wait(PROBE_SAMPLE, 60) is None:
            raise RuntimeError("the Celery worker did not run an urgent probe task within 60 s")
        for sample in range(args.warmup + args.samples):
            idle_gap(args.gap)
            called = time.time()
            stamp.apply_async(args=(1_000_000 + sample,), priority=URGENT)
            returned = time.time()
            started = receiver.wait(1_000_000 + sample, 5)
            if sample >= args.warmup:
                samples.add(called, returned, started)
    finally:
        stop(worker)
        receiver.close()
    left = counter.llen(backlog_key)
    if left != args.backlog:
        raise RuntimeError(f"the worker took from the backlog: {left} of {args.backlog} left")
    return samples.as_dict() | {"backlog_left": left}


WORKLOADS = {"enqueue": run_enqueue, "bulk": run_bulk, "drain": run_drain, "latency": run_latency}

if __name__ == "__main__":
    side_main(__doc__, WORKLOADS, reset=counter.flushdb)
