"""Worker throughput on no-op tasks against a raw nats-py fetch(1) + ack loop, in the same run.

    .venv/bin/python benchmarks/bench_worker.py [--n 5000] [--repeats 3] [--check]

Raw baseline: N messages published into the task stream (untimed), then `psub.fetch(1)` +
`msg.ack()` N times on the same durable consumer the worker uses (webapp_default_normal).
Ours: N demo.echo tasks dispatched (untimed), then one core.worker.Worker (all buckets,
maintenance loops on, as `run.py worker` runs it) in its own thread and event loop; the clock
runs from its first "started" event to its N-th "succeeded" event (a worker slower than
--budget seconds is measured on the tasks it finished by then, so the script stays bounded).
Measured at concurrency 1 (the target: >= 50% of raw) and at concurrency 4 and 16 (for information).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import _common  # noqa: F401  (puts the project on sys.path)
import nats
from _common import BenchEnv, LoopThread, Row, clear_tasks, count_tasks, finish, fmt, median, parser
from nats.js import api

from core.broker.messages import consumer_name
from core.engine.worker import Worker, WorkerScope, WorkerThread
from core.priority import Bucket, subject_for
from core.runtime import Runtime
from core.tasks.rows import DispatchRequest
from db.models import Task, TaskStatus

TARGET_RATIO = 0.50
CATEGORY, PHASE, BUCKET = "webapp", "default", Bucket.NORMAL  # where demo.echo at priority 5 goes


async def raw_publish(js, n: int, tag: str) -> None:
    subject = subject_for(CATEGORY, PHASE, BUCKET)
    futures = [
        await js.publish_async(
            subject,
            json.dumps({"task_id": f"{tag}{i:08d}", "generation": 1}).encode(),
            headers={api.Header.MSG_ID: f"{tag}{i:08d}:1"},
        )
        for i in range(n)
    ]
    for future in futures:
        await future


async def raw_consume(psub, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        msgs = await psub.fetch(1, timeout=5)
        await msgs[0].ack()
    elapsed = time.perf_counter() - start
    return elapsed


class Probe:
    """on_event callback: timestamps and counts; wakes the main thread at the N-th success."""

    def __init__(self, expected: int):
        self.expected = expected
        self.first_started: float | None = None
        self.last_succeeded: float | None = None  # time of the most recent success
        self.succeeded = 0
        self.failed = 0
        self.dropped = 0
        self.done = threading.Event()

    def __call__(self, event: str, task_id: str) -> None:
        now = time.perf_counter()
        if event == "started" and self.first_started is None:
            self.first_started = now
        elif event == "succeeded":
            self.succeeded += 1
            self.last_succeeded = now
            if self.succeeded >= self.expected:
                self.done.set()
        elif event == "failed":
            self.failed += 1
        elif event == "dropped":
            self.dropped += 1


def run_ours(
    env: BenchEnv, runtime: Runtime, n: int, concurrency: int, budget: float, scope: WorkerScope = WorkerScope()
) -> dict:
    """Rate over N tasks, or over those done when `budget` seconds have passed (bounded runtime)."""
    requests = [DispatchRequest("demo.echo", {"i": i}, priority=5) for i in range(n)]
    for offset in range(0, n, 1000):
        runtime.service.dispatch_tasks(requests[offset : offset + 1000], created_by="bench")
    runtime.service.flush(120)  # every message in the stream before the worker starts
    if runtime.service.last_publish_error:
        raise RuntimeError(runtime.service.last_publish_error)
    probe = Probe(n)
    worker = Worker(
        env.settings,
        runtime.db,
        runtime.registry,
        env.server.url,
        scope=scope,
        concurrency=concurrency,
        on_event=probe,
    )
    pulls = {"calls": 0, "empty": 0}
    original_pull = worker.broker.pull_no_wait

    async def counting_pull(consumer: str, batch: int):
        pulled = await original_pull(consumer, batch)
        pulls["calls"] += 1
        if not pulled.messages:
            pulls["empty"] += 1
        return pulled

    worker.broker.pull_no_wait = counting_pull
    thread = WorkerThread(worker).start()
    try:
        finished = probe.done.wait(budget)
        done = probe.succeeded
        last = probe.last_succeeded
    finally:
        thread.stop()
    succeeded_rows = count_tasks(runtime.db, Task.status == TaskStatus.SUCCEEDED)
    if done < 2 or probe.first_started is None or last is None:
        raise RuntimeError(f"concurrency {concurrency}: only {done} of {n} tasks succeeded in {budget:.0f}s")
    if succeeded_rows < done:
        raise RuntimeError(f"{succeeded_rows} rows succeeded, but {done} success events were seen")
    elapsed = last - probe.first_started
    return {
        "rate": done / elapsed,
        "completed": done,
        "all_done": finished,
        "seconds": elapsed,
        "pulls_per_task": pulls["calls"] / done,
        "empty_pulls_per_task": pulls["empty"] / done,
        "dropped": probe.dropped,
        "failed": probe.failed,
    }


def partial(result: dict, n: int) -> str:
    if result["all_done"]:
        return ""
    return f"; budget reached after {result['completed']:,} of {n:,} tasks"


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="messages/tasks per measured run")
    p.add_argument(
        "--budget",
        type=float,
        default=12.0,
        help="seconds one worker run may take; a slower worker is measured on the tasks done by then",
    )
    args = p.parse_args()
    n = args.n

    print(f"bench_worker: N={n:,} per run, {args.repeats} repeats (median); worker maintenance loops on")
    with BenchEnv("worker", sync_always=args.sync_always) as env:
        context = env.describe()
        runtime = Runtime.open(env.settings, require_broker=True)
        raw = LoopThread("raw-nats")
        nc = None
        try:
            nc = raw.run(nats.connect(env.server.url, name="bench raw"))
            js = nc.jetstream(timeout=10)
            jsm = nc.jsm(timeout=10)
            stream = env.settings.stream_name
            psub = raw.run(js.pull_subscribe_bind(consumer_name(CATEGORY, PHASE, BUCKET), stream))

            def reset() -> None:
                raw.run(jsm.purge_stream(stream))
                clear_tasks(runtime.db)

            def run_raw(tag: str, count: int) -> float:
                reset()
                raw.run(raw_publish(js, count, tag))
                seconds = raw.run(raw_consume(psub, count))
                raw.run(nc.flush())
                return count / seconds

            # Warm-up of both paths; not counted.
            run_raw("warm-", 500)
            reset()
            run_ours(env, runtime, 200, 1, args.budget)

            raw_rates: list[float] = []
            ours: dict[int, list[dict]] = {1: [], 4: [], 16: []}
            for repeat in range(args.repeats):
                sides = ["raw", 1, 4, 16] if repeat % 2 == 0 else [16, 4, 1, "raw"]
                for side in sides:
                    if side == "raw":
                        raw_rates.append(run_raw(f"r{repeat}-", n))
                    else:
                        reset()
                        ours[side].append(run_ours(env, runtime, n, side, args.budget))
                print(
                    f"  run {repeat + 1}: raw {fmt(raw_rates[-1])} msgs/s, "
                    f"ours c1 {fmt(ours[1][-1]['rate'])} tasks/s ({ours[1][-1]['rate'] / raw_rates[-1]:.0%}"
                    f"{partial(ours[1][-1], n)}), "
                    f"c4 {fmt(ours[4][-1]['rate'])} tasks/s ({ours[4][-1]['rate'] / raw_rates[-1]:.0%}"
                    f"{partial(ours[4][-1], n)}), "
                    f"c16 {fmt(ours[16][-1]['rate'])} tasks/s ({ours[16][-1]['rate'] / raw_rates[-1]:.0%}"
                    f"{partial(ours[16][-1], n)})"
                )
                sys.stdout.flush()

            # Diagnostic, once: a worker scoped to the one consumer cell the tasks are in
            # (webapp.default, all buckets), to show what sweeping the other cells costs.
            reset()
            narrow = run_ours(env, runtime, n, 1, args.budget, WorkerScope(categories=(CATEGORY,), phases=(PHASE,)))
        finally:
            if nc is not None:
                try:
                    raw.run(nc.close(), timeout=10)
                except Exception:
                    pass
            raw.close()
            runtime.close()

    raw_rate = median(raw_rates)
    c1 = median(r["rate"] for r in ours[1])
    c4 = median(r["rate"] for r in ours[4])
    c16 = median(r["rate"] for r in ours[16])
    print()
    print("Diagnostics (median over runs):")
    for conc in (1, 4, 16):
        print(
            f"  concurrency {conc}: {median(r['pulls_per_task'] for r in ours[conc]):.1f} no-wait pulls per task "
            f"({median(r['empty_pulls_per_task'] for r in ours[conc]):.1f} of them empty); "
            f"dropped {sum(r['dropped'] for r in ours[conc])}, failed {sum(r['failed'] for r in ours[conc])}"
        )
    print(
        f"  concurrency 1, scope webapp.default only (one run): {fmt(narrow['rate'])} tasks/s "
        f"({narrow['rate'] / raw_rate:.0%} of raw), {narrow['pulls_per_task']:.1f} pulls per task "
        f"({narrow['empty_pulls_per_task']:.1f} empty){partial(narrow, n)}"
    )
    context.update(raw_runs=raw_rates, ours_c1=ours[1], ours_c4=ours[4], ours_c16=ours[16], narrow_scope_c1=narrow)
    rows = [
        Row(
            "worker",
            f"no-op tasks, concurrency 1 ({env.backend}, N={n:,})",
            c1,
            raw_rate,
            "/s",
            f">= {TARGET_RATIO:.0%} of raw",
            c1 / raw_rate >= TARGET_RATIO,
        ),
        Row("worker", f"no-op tasks, concurrency 4 ({env.backend}, N={n:,})", c4, raw_rate, "/s", "", None),
        Row("worker", f"no-op tasks, concurrency 16 ({env.backend}, N={n:,})", c16, raw_rate, "/s", "", None),
    ]
    return finish(args, rows, context, "bench_worker summary (ours: tasks/s, baseline: raw fetch(1)+ack msgs/s)")


if __name__ == "__main__":
    sys.exit(main())
