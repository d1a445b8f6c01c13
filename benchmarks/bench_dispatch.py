"""Dispatch: Switchyard's dispatch_tasks and dispatch_task (rows committed, published, recorded)
against raw JetStream publishes from nats-py, in the same run.

    .venv/bin/python benchmarks/bench_dispatch.py [--n 20000] [--batch 1000] [--single 5000] [--repeats 3] [--check]

Bulk: raw `js.publish_async` of N messages to tasks.{category}.{phase}.{bucket} with a small
JSON payload and a Nats-Msg-Id header, then await every future; ours: N DispatchRequests given
to `runtime.service.dispatch_tasks` `--batch` at a time, timed until the publisher has published
and recorded the last one. Target: ours >= 50% of raw.

One call per task: raw `await js.publish(...)` one message at a time; ours `dispatch_task` in a
loop, which returns once the row is committed (accepted; the publisher publishes behind it),
and also timed until the last one is published and recorded. Target: accepted >= 1.0x raw.
The stream is purged and the tasks table emptied before every measured run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import _common  # noqa: F401  (puts the project on sys.path)
import nats
from _common import BenchEnv, LoopThread, Row, clear_tasks, count_tasks, finish, fmt, median, parser
from nats.js import api

from core.broker.messages import TaskMessage
from core.priority import priority_to_bucket, subject_for
from core.runtime import Runtime
from core.tasks.rows import DispatchRequest, build_task_row
from db.models import Task

TARGET_RATIO = 0.50
# One call per task: ours returns on commit; raw awaits each publish's ack (what a peer's
# one-call enqueue over JetStream does, e.g. taskiq-nats's kiq).
SINGLE_TARGET_RATIO = 1.0
NAME = "demo.echo"  # category webapp, phase default


def requests_for(n: int) -> list[DispatchRequest]:
    return [DispatchRequest(NAME, {"i": i}, priority=i % 11) for i in range(n)]


async def raw_publish(js, n: int, tag: str) -> float:
    """Pipelined publish_async of n messages (nats-py defaults), then await every ack. Returns seconds."""
    subjects = [subject_for("webapp", "default", priority_to_bucket(i % 11)) for i in range(n)]
    start = time.perf_counter()
    futures = []
    for i in range(n):
        task_id = f"{tag}{i:08d}"
        payload = json.dumps({"task_id": task_id, "generation": 1}).encode()
        futures.append(await js.publish_async(subjects[i], payload, headers={api.Header.MSG_ID: f"{task_id}:1"}))
    acks = await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    if len(acks) != n or any(a.duplicate for a in acks):
        raise RuntimeError("raw publish: missing or duplicate acks")
    return elapsed


async def raw_publish_one_by_one(js, n: int, tag: str) -> float:
    """n publishes, each awaited before the next. Returns seconds."""
    start = time.perf_counter()
    for i in range(n):
        task_id = f"{tag}{i:08d}"
        payload = json.dumps({"task_id": task_id, "generation": 1}).encode()
        subject = subject_for("webapp", "default", priority_to_bucket(i % 11))
        await js.publish(subject, payload, headers={api.Header.MSG_ID: f"{task_id}:1"})
    return time.perf_counter() - start


def run_ours_one_by_one(runtime: Runtime, n: int) -> tuple[float, float]:
    """dispatch_task n times: (seconds until the last call returned, until all were published)."""
    service = runtime.service
    start = time.perf_counter()
    for i in range(n):
        service.dispatch_task(NAME, args={"i": i}, priority=i % 11, created_by="bench")
    calls = time.perf_counter() - start
    if not service.flush(120):
        raise RuntimeError("the publisher did not finish within 120 s")
    return calls, time.perf_counter() - start


def run_ours(runtime: Runtime, n: int, batch: int) -> float:
    """Seconds until the last of n tasks is published and recorded: dispatch_tasks returns on
    commit, so the publisher's tail is waited for and counted."""
    requests = requests_for(n)
    service = runtime.service
    start = time.perf_counter()
    for offset in range(0, n, batch):
        service.dispatch_tasks(requests[offset : offset + batch], created_by="bench")
    if not service.flush(120):
        raise RuntimeError("the publisher did not finish within 120 s")
    elapsed = time.perf_counter() - start
    if service.last_publish_error:
        raise RuntimeError(f"publish failed: {service.last_publish_error}")
    return elapsed


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="messages/tasks per measured run")
    p.add_argument("--batch", type=int, default=1000, help="requests per dispatch_tasks call")
    p.add_argument("--single", type=int, default=5000, help="tasks per one-call-per-task run")
    args = p.parse_args()
    n, batch = args.n, args.batch

    print(f"bench_dispatch: N={n:,} per run, dispatch_tasks batches of {batch}, {args.repeats} repeats (median)")
    with BenchEnv("dispatch", sync_always=args.sync_always) as env:
        context = env.describe()
        runtime = Runtime.open(env.settings, require_broker=True)
        raw = LoopThread("raw-nats")
        nc = None
        try:
            nc = raw.run(nats.connect(env.server.url, name="bench raw"))
            js = nc.jetstream(timeout=10)
            jsm = nc.jsm(timeout=10)
            stream = env.settings.stream_name

            def reset() -> None:
                raw.run(jsm.purge_stream(stream))
                clear_tasks(runtime.db)

            def stream_messages() -> int:
                return raw.run(jsm.stream_info(stream)).state.messages

            # Warm-up (connections, prepared statements, the async-reply inbox); not counted.
            reset()
            raw.run(raw_publish(js, 1000, "warm"))
            reset()
            run_ours(runtime, 1000, batch)

            raw_rates, our_rates = [], []
            for repeat in range(args.repeats):
                order = ("raw", "ours") if repeat % 2 == 0 else ("ours", "raw")
                for side in order:
                    reset()
                    if side == "raw":
                        seconds = raw.run(raw_publish(js, n, f"r{repeat}-{os.getpid()}-"))
                        assert stream_messages() == n
                        raw_rates.append(n / seconds)
                    else:
                        seconds = run_ours(runtime, n, batch)
                        assert stream_messages() == n, "not every task reached the stream"
                        recorded = count_tasks(runtime.db, Task.publish_due_at.is_(None), Task.stream_seq.is_not(None))
                        assert recorded == n, f"only {recorded} of {n} rows recorded as published"
                        our_rates.append(n / seconds)
                print(
                    f"  run {repeat + 1}: raw {fmt(raw_rates[-1])} msgs/s, ours {fmt(our_rates[-1])} tasks/s "
                    f"({our_rates[-1] / raw_rates[-1]:.0%})"
                )
                sys.stdout.flush()

            single_raw, single_accepted, single_published = [], [], []
            for repeat in range(args.repeats):
                order = ("raw", "ours") if repeat % 2 == 0 else ("ours", "raw")
                for side in order:
                    reset()
                    if side == "raw":
                        seconds = raw.run(raw_publish_one_by_one(js, args.single, f"s{repeat}-{os.getpid()}-"))
                        single_raw.append(args.single / seconds)
                    else:
                        calls, published = run_ours_one_by_one(runtime, args.single)
                        assert stream_messages() == args.single, "not every task reached the stream"
                        single_accepted.append(args.single / calls)
                        single_published.append(args.single / published)
                print(
                    f"  one call per task, run {repeat + 1}: raw awaited publish {fmt(single_raw[-1])}/s, "
                    f"ours accepted {fmt(single_accepted[-1])}/s, published {fmt(single_published[-1])}/s"
                )
                sys.stdout.flush()

            # Where ours spends its time: one extra instrumented run, not part of the median.
            breakdown = diagnose(runtime, raw, js, n, batch, reset)
        finally:
            if nc is not None:
                try:
                    raw.run(nc.close(), timeout=10)
                except Exception:
                    pass
            raw.close()
            runtime.close()

    raw_rate, our_rate = median(raw_rates), median(our_rates)
    ratio = our_rate / raw_rate
    print()
    print("Diagnostics (one instrumented run of ours, seconds for N tasks):")
    for key, value in breakdown.items():
        print(f"  {key:56} {value}")
    context.update(
        breakdown=breakdown,
        raw_runs=raw_rates,
        our_runs=our_rates,
        single_raw_runs=single_raw,
        single_accepted_runs=single_accepted,
        single_published_runs=single_published,
    )
    rows = [
        Row(
            "dispatch",
            f"bulk dispatch ({backend_label(env)}, N={n:,})",
            our_rate,
            raw_rate,
            "/s",
            f">= {TARGET_RATIO:.0%} of raw",
            ratio >= TARGET_RATIO,
        ),
        Row(
            "dispatch",
            f"dispatch_task, one call per task, accepted ({backend_label(env)}, N={args.single:,})",
            median(single_accepted),
            median(single_raw),
            "/s",
            f">= {SINGLE_TARGET_RATIO:.1f}x raw",
            median(single_accepted) >= SINGLE_TARGET_RATIO * median(single_raw),
        ),
        Row(
            "dispatch",
            f"  the same, until published and recorded ({backend_label(env)})",
            median(single_published),
            median(single_raw),
            "/s",
            "",
            None,
        ),
    ]
    return finish(args, rows, context, "bench_dispatch summary (ours: tasks/s, baseline: raw publish_async msgs/s)")


def backend_label(env: BenchEnv) -> str:
    return env.backend


_FLOOR_COLUMNS = (
    "id, name, category, phase, priority, bucket, status, args, correlation_id, created_by, generation, "
    "publish_due_at, attempts, max_attempts, created_at, queued_at"
)


def raw_insert_commit_rate(runtime: Runtime, n: int) -> float:
    """The database's floor for one call per task: a hand-written INSERT into `tasks` and a
    COMMIT, n times, straight through the DB-API driver (no SQLAlchemy, no validation)."""
    engine = runtime.db.engine
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO tasks ({_FLOOR_COLUMNS}) VALUES ({', '.join([mark] * 16)})"
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        start = time.perf_counter()
        for i in range(n):
            task_id = f"floor{os.getpid()}-{i:010d}"
            now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            args = json.dumps({"i": i})
            values = (NAME, "webapp", "default", 5, "normal", "queued", args, task_id, "bench", 1, now, 0, 3, now, now)
            cursor.execute(sql, (task_id, *values))
            connection.commit()  # SQLite's connection is in autocommit mode: the INSERT committed
        return n / (time.perf_counter() - start)
    finally:
        connection.close()


def diagnose(runtime: Runtime, raw: LoopThread, js, n: int, batch: int, reset) -> dict[str, str]:
    """Split one dispatch run into: building rows, the calls (INSERT + commit), the publisher's
    tail after the last call; then TaskBroker.publish alone against raw publish_async."""
    reset()
    requests = requests_for(n)
    service = runtime.service
    start = time.perf_counter()
    for offset in range(0, n, batch):
        service.dispatch_tasks(requests[offset : offset + batch], created_by="bench")
    calls = time.perf_counter() - start
    service.flush(120)
    total = time.perf_counter() - start

    # Building rows alone (pure Python: validation, ids, JSON round trip of args).
    from db.models import utcnow

    now = utcnow()
    start = time.perf_counter()
    for request in requests:
        build_task_row(runtime.settings, runtime.registry, request, now, "bench")
    build = time.perf_counter() - start

    # Core's TaskBroker.publish alone (no database), vs raw publish_async, same messages.
    reset()
    broker = runtime.broker.broker
    messages = [
        TaskMessage(f"diag{i:08d}{os.getpid()}", 1, subject_for("webapp", "default", priority_to_bucket(i % 11)))
        for i in range(n)
    ]
    start = time.perf_counter()
    for offset in range(0, n, batch):
        results = runtime.broker.run(broker.publish(messages[offset : offset + batch]))
        assert not any(isinstance(r, Exception) for r in results)
    core_publish = time.perf_counter() - start
    reset()
    raw_seconds = raw.run(raw_publish(js, n, f"diagraw{os.getpid()}-"))
    reset()
    floor = raw_insert_commit_rate(runtime, min(n, 5000))
    reset()
    return {
        "dispatch_tasks until published and recorded": f"{total:.3f} s ({n / total:,.0f} tasks/s)",
        "  the calls (accepted: rows committed)": f"{calls:.3f} s ({n / calls:,.0f} tasks/s)",
        "    of which build_task_row (measured separately)": f"{build:.3f} s",
        "  the publisher's tail after the last call": f"{total - calls:.3f} s",
        "TaskBroker.publish alone, same batches": f"{core_publish:.3f} s ({n / core_publish:,.0f} msgs/s)",
        "raw publish_async alone, one pipeline": f"{raw_seconds:.3f} s ({n / raw_seconds:,.0f} msgs/s)",
        "hand-written INSERT + COMMIT per task via the driver": f"{floor:,.0f} tasks/s (one call per task's floor)",
    }


if __name__ == "__main__":
    sys.exit(main())
