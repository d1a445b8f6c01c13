"""RQ's side of bench_peers.py (runs in .venv-peers): its two jobs and the four workloads. RQ's
worker imports the jobs from this module by name ("rq_side.noop").

    python rq_side.py enqueue|bulk|drain|latency [options]   (prints one JSON line)

Redis: BENCH_REDIS_URL, db 2. The worker is `rq worker` (RQ's default Worker: it forks a work
horse for every job) at concurrency 1, and `rq worker-pool -n N` (N such workers) above it.
A finished job is counted from RQ's own FinishedJobRegistry. RQ has no priorities inside a
queue: urgent jobs go to a queue of their own ("high"), the backlog to "low".
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from redis import Redis
from rq import Queue
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

REDIS_URL = os.environ["BENCH_REDIS_URL"].rstrip("/") + "/2"
connection = Redis.from_url(REDIS_URL)
bench = Queue("bench", connection=connection)
high = Queue("high", connection=connection)
low = Queue("low", connection=connection)


def noop() -> None:
    pass


def stamp(sample: int) -> None:
    send_stamp(sample)


NOOP, STAMP = "rq_side.noop", "rq_side.stamp"  # by name: in the side script this module is __main__


def enqueue_in_batches(queue: Queue, jobs: list[tuple[str, tuple]], batch: int) -> None:
    for offset in range(0, len(jobs), batch):
        queue.enqueue_many([Queue.prepare_data(name, args) for name, args in jobs[offset : offset + batch]])


def worker_command(queue: str, concurrency: int, *, simple: bool = False) -> list[str]:
    if concurrency == 1:
        command = [sys.executable, "-m", "rq.cli", "worker"]
    else:
        command = [sys.executable, "-m", "rq.cli", "worker-pool", "--num-workers", str(concurrency)]
    if simple:  # runs each job in the worker process itself: no fork per job
        command += ["--worker-class", "rq.worker.SimpleWorker"]
    return [*command, "--url", REDIS_URL, "--quiet", queue]


def worker_env(stamp_port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if stamp_port is not None:
        env["BENCH_STAMP_PORT"] = str(stamp_port)
    return env


# -- workloads ----------------------------------------------------------------------------------


def run_enqueue(args) -> dict:
    for _ in range(200):  # warm-up
        bench.enqueue(NOOP)
    connection.flushdb()
    start = time.perf_counter()
    for _ in range(args.n):
        bench.enqueue(NOOP)
    seconds = time.perf_counter() - start
    if bench.count != args.n:
        raise RuntimeError(f"{bench.count} jobs queued after {args.n} enqueue calls")
    return {"rate": args.n / seconds, "seconds": seconds}


def run_bulk(args) -> dict:
    enqueue_in_batches(bench, [(NOOP, ())] * 200, args.batch)  # warm-up
    connection.flushdb()
    jobs = [(NOOP, ())] * args.n
    start = time.perf_counter()
    enqueue_in_batches(bench, jobs, args.batch)
    seconds = time.perf_counter() - start
    if bench.count != args.n:
        raise RuntimeError(f"{bench.count} jobs queued after enqueue_many of {args.n}")
    return {"rate": args.n / seconds, "seconds": seconds}


def run_drain(args, *, simple: bool = False) -> dict:
    enqueue_in_batches(bench, [(NOOP, ())] * args.n, 1000)
    log = Path(args.log_dir) / f"rq-drain-c{args.concurrency}{'-simple' if simple else ''}.log"
    spawned_at = time.monotonic()
    worker = spawn(worker_command("bench", args.concurrency, simple=simple), log=log, env=worker_env())
    try:
        return measure_drain(
            lambda: bench.finished_job_registry.count, args.n, worker, spawned_at, budget=args.budget, log=log
        )
    finally:
        stop(worker)


def run_latency(args) -> dict:
    receiver = StampReceiver()
    enqueue_in_batches(low, [(STAMP, (i,)) for i in range(args.backlog)], 1000)
    log = Path(args.log_dir) / "rq-latency.log"
    worker = spawn(worker_command("high", 1), log=log, env=worker_env(receiver.port))
    samples = LatencySamples()
    try:
        high.enqueue(STAMP, PROBE_SAMPLE)
        if receiver.wait(PROBE_SAMPLE, 60) is None:
            raise RuntimeError("the RQ worker did not run a probe job within 60 s")
        for sample in range(args.warmup + args.samples):
            idle_gap(args.gap)
            called = time.time()
            high.enqueue(STAMP, 1_000_000 + sample)
            returned = time.time()
            started = receiver.wait(1_000_000 + sample, 5)
            if sample >= args.warmup:
                samples.add(called, returned, started)
    finally:
        stop(worker)
        receiver.close()
    if low.count != args.backlog:
        raise RuntimeError(f"the worker took from the backlog: {low.count} of {args.backlog} left")
    return samples.as_dict() | {"backlog_left": low.count}


if __name__ == "__main__":
    side_main(
        __doc__,
        {
            "enqueue": run_enqueue,
            "bulk": run_bulk,
            "drain": run_drain,
            "drain-simple": lambda args: run_drain(args, simple=True),
            "latency": run_latency,
        },
        reset=connection.flushdb,
    )
