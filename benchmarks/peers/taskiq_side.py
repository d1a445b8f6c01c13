"""taskiq's side of bench_peers.py (runs in .venv-peers): a taskiq-nats broker, its two tasks and
the four workloads. `taskiq worker taskiq_side:broker` imports this module for the worker.

    python taskiq_side.py enqueue|bulk|drain|latency [options]   (prints one JSON line)

Broker: taskiq-nats' PullBasedJetStreamBroker on the benchmark's nats-server (BENCH_NATS_URL,
the same server Switchyard uses) with the library's defaults: a file-stored stream of its own,
one durable pull consumer fetching one message at a time, the message acked after the task ran.
No result backend. A finished no-op is counted by the task's own INCR in Redis
(BENCH_REDIS_URL, db 3). taskiq has no priorities: an urgent task waits behind the backlog.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import nats
import redis
import redis.asyncio
from nats.js.errors import NotFoundError
from side_common import (
    StampReceiver,
    measure_drain,
    send_stamp,
    side_main,
    spawn,
    stop,
    wait_for_count,
)
from taskiq_nats import PullBasedJetStreamBroker

NATS_URL = os.environ["BENCH_NATS_URL"]
REDIS_URL = os.environ["BENCH_REDIS_URL"].rstrip("/") + "/3"
STREAM = "taskiq_bench"
DONE_KEY = "bench:done"
# The worker does not leave a pull without a timeout (the library's default) when asked to
# stop, and waits there; everything measured has finished by then, so it is killed sooner.
WORKER_STOP_SECONDS = 3.0

broker = PullBasedJetStreamBroker(NATS_URL, subject="taskiq_bench.tasks", stream_name=STREAM, durable="taskiq_bench")
counter = redis.Redis.from_url(REDIS_URL)
_async_counter: redis.asyncio.Redis | None = None


@broker.task(task_name="bench.noop")
async def noop() -> None:
    global _async_counter
    if _async_counter is None:
        _async_counter = redis.asyncio.Redis.from_url(REDIS_URL)
    await _async_counter.incr(DONE_KEY)


@broker.task(task_name="bench.stamp")
async def stamp(sample: int) -> None:
    send_stamp(sample)


def done() -> int:
    return int(counter.get(DONE_KEY) or 0)


def reset() -> None:
    """Empty the counter and remove taskiq's stream (and with it its consumer)."""

    async def delete_stream() -> None:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(STREAM)
        except NotFoundError:
            pass
        finally:
            await nc.close()

    counter.flushdb()
    asyncio.run(delete_stream())


async def kick_concurrently(task, calls: list[tuple], batch: int) -> None:
    """`batch` kiq() calls at a time with asyncio.gather: their publishes share the connection."""
    for offset in range(0, len(calls), batch):
        await asyncio.gather(*(task.kiq(*call) for call in calls[offset : offset + batch]))


async def queued_messages() -> int:
    return (await broker.js.stream_info(STREAM)).state.messages


def worker_command(concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "taskiq", "worker", "taskiq_side:broker", "--workers", "1",
        "--max-async-tasks", str(concurrency), "--log-level", "WARNING",
    ]  # fmt: skip


def worker_env(stamp_port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if stamp_port is not None:
        env["BENCH_STAMP_PORT"] = str(stamp_port)
    return env


# -- workloads ----------------------------------------------------------------------------------


async def run_enqueue(args) -> dict:
    await broker.startup()
    try:
        for _ in range(200):  # warm-up
            await noop.kiq()
        start = time.perf_counter()
        for _ in range(args.n):
            await noop.kiq()
        seconds = time.perf_counter() - start
        if await queued_messages() != args.n + 200:
            raise RuntimeError("not every kiq() reached the stream")
    finally:
        await broker.shutdown()
    return {"rate": args.n / seconds, "seconds": seconds}


async def run_bulk(args) -> dict:
    await broker.startup()
    try:
        await kick_concurrently(noop, [()] * 200, args.batch)  # warm-up
        start = time.perf_counter()
        await kick_concurrently(noop, [()] * args.n, args.batch)
        seconds = time.perf_counter() - start
        if await queued_messages() != args.n + 200:
            raise RuntimeError("not every kiq() reached the stream")
    finally:
        await broker.shutdown()
    return {"rate": args.n / seconds, "seconds": seconds}


async def fill(task, calls: list[tuple]) -> None:
    await broker.startup()
    try:
        await kick_concurrently(task, calls, 1000)
    finally:
        await broker.shutdown()


def run_drain(args) -> dict:
    asyncio.run(fill(noop, [()] * args.n))
    log = Path(args.log_dir) / f"taskiq-drain-c{args.concurrency}.log"
    spawned_at = time.monotonic()
    worker = spawn(worker_command(args.concurrency), log=log, env=worker_env())
    try:
        return measure_drain(done, args.n, worker, spawned_at, budget=args.budget, log=log)
    finally:
        stop(worker, timeout=WORKER_STOP_SECONDS)


async def run_latency(args) -> dict:
    """No priority: one urgent task sent while the worker works through the backlog; how long
    it waited, up to --cap seconds."""
    receiver = StampReceiver()
    await broker.startup()
    try:
        await kick_concurrently(noop, [()] * args.backlog, 1000)
        log = Path(args.log_dir) / "taskiq-latency.log"
        worker = spawn(worker_command(1), log=log, env=worker_env(receiver.port))
        try:
            if wait_for_count(done, 1, 60) < 1:
                raise RuntimeError("the taskiq worker did not start on the backlog within 60 s")
            done_before = done()
            called = time.time()
            await stamp.kiq(1_000_000)
            returned = time.time()
            started = receiver.wait(1_000_000, args.cap)  # blocks the loop: nothing else to do
        finally:
            stop(worker, timeout=WORKER_STOP_SECONDS)
    finally:
        await broker.shutdown()
        receiver.close()
    return {
        "fifo": True,
        "cap_s": args.cap,
        "waited_ms": None if started is None else (started - returned) * 1000,
        "call_ms": (returned - called) * 1000,
        "backlog_done_before": done_before,
    }


if __name__ == "__main__":
    side_main(
        __doc__,
        {
            "enqueue": lambda args: asyncio.run(run_enqueue(args)),
            "bulk": lambda args: asyncio.run(run_bulk(args)),
            "drain": run_drain,
            "latency": lambda args: asyncio.run(run_latency(args)),
        },
        reset=reset,
    )
