"""What bench_peers.py and the peers' side scripts share: worker processes, memory, the start
stamps task bodies send, and the drain clock. Standard library only: both venvs import it.

Settings come through the environment (the side scripts' task modules are imported by the
peers' own worker commands, which take no arguments of ours):

    BENCH_REDIS_URL   the benchmark's private redis-server (sides use db 1-3 of it)
    BENCH_NATS_URL    the benchmark's private nats-server
    BENCH_STAMP_PORT  the UDP port on 127.0.0.1 that start stamps go to
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

PEERS_DIR = Path(__file__).resolve().parent
PROBE_SAMPLE = -1  # the stamp that tells a latency run its worker is up


def emit(result: dict) -> None:
    """A side script's answer: one JSON line on stdout, the last line it prints."""
    print(json.dumps(result), flush=True)


# -- worker processes ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: SIGTERM when the process that started this one dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(command: list[str], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A worker process in its own process group (so stop() reaches its children too), which
    dies with its parent; its output goes to `log`."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            command,
            env=env,
            cwd=PEERS_DIR,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop(process: subprocess.Popen, timeout: float = 15.0) -> float:
    """SIGTERM to the worker (a warm shutdown, as a supervisor asks for it), then SIGKILL to its
    whole process group, at once if it has exited or after `timeout`. Returns the seconds the
    worker took to exit."""
    started = time.monotonic()
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever it left behind (forks, pool members)
    except ProcessLookupError:
        pass
    process.wait()
    return time.monotonic() - started


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# -- memory -------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in field 2 may hold spaces; the parent pid follows its ')'.
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over `pid` and every process below it. RSS counts pages shared
    after a fork once per process; PSS splits them between the sharers."""
    rss = pss = 0
    for member in _descendants(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except (OSError, ValueError):
            continue  # gone meanwhile
    return rss / 1024, pss / 1024


class MemoryPeak:
    """The highest tree RSS and PSS seen, sampled at most every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid = pid
        self.interval = interval
        self.rss_mb = self.pss_mb = 0.0
        self._next = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        rss, pss = tree_memory_mb(self.pid)
        self.rss_mb = max(self.rss_mb, rss)
        self.pss_mb = max(self.pss_mb, pss)


# -- the drain clock ----------------------------------------------------------------------------


def measure_drain(
    done: Callable[[], int],
    n: int,
    worker: subprocess.Popen,
    spawned_at: float,
    *,
    budget: float,
    log: Path,
    poll: float = 0.02,
    startup_limit: float = 60.0,
) -> dict:
    """Poll `done()` (the system's own count of finished tasks) every `poll` seconds from the
    worker's start. The clock runs from the first poll that sees a finished task to the poll
    that sees all `n`; the rate is the tasks finished in between over that time. A worker still
    busy `budget` seconds after its first task is measured on what it finished by then."""
    memory = MemoryPeak(worker.pid)
    first_at = first_count = None
    while True:
        now = time.monotonic()
        count = done()
        memory.sample()
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}:\n{log_tail(log)}")
        if first_at is None:
            if count > 0:
                first_at, first_count = now, count
            elif now - spawned_at > startup_limit:
                raise RuntimeError(f"no task finished {startup_limit:.0f} s after the worker started:\n{log_tail(log)}")
        if first_at is not None and (count >= n or now - first_at > budget):
            break
        time.sleep(poll)
    seconds = now - first_at
    timed = count - first_count
    return {
        "rate": timed / seconds if seconds > 0 and timed > 0 else float("nan"),
        "seconds": seconds,
        "completed": count,
        "all_done": count >= n,
        "startup_s": first_at - spawned_at,
        "rss_mb": memory.rss_mb,
        "pss_mb": memory.pss_mb,
    }


def wait_for_count(done: Callable[[], int], at_least: int, timeout: float, poll: float = 0.02) -> int:
    """Poll `done()` until it reaches `at_least` or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while (count := done()) < at_least and time.monotonic() < deadline:
        time.sleep(poll)
    return count


# -- start stamps -------------------------------------------------------------------------------

_stamp_socket: socket.socket | None = None


def send_stamp(sample: int) -> None:
    """Called first thing in a latency task's body: tells the waiting side when it started."""
    global _stamp_socket
    started = time.time()
    if _stamp_socket is None:
        _stamp_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _stamp_socket.sendto(f"{sample} {started!r}".encode(), ("127.0.0.1", int(os.environ["BENCH_STAMP_PORT"])))


class StampReceiver:
    """The UDP socket start stamps arrive on (one machine: the task's wall clock is ours)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.stamps: dict[int, float] = {}

    def wait(self, sample: int, timeout: float) -> float | None:
        """The time.time() at which `sample`'s task body started, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while sample not in self.stamps:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.socket.settimeout(remaining)
            try:
                data = self.socket.recv(256)
            except socket.timeout:
                return None
            number, started = data.decode().split()
            self.stamps[int(number)] = float(started)
        return self.stamps[sample]

    def close(self) -> None:
        self.socket.close()


class LatencySamples:
    """Milliseconds from the enqueue call, and from its return, to the task body's start."""

    def __init__(self) -> None:
        self.from_call_ms: list[float] = []
        self.from_return_ms: list[float] = []
        self.missed = 0

    def add(self, called: float, returned: float, started: float | None) -> None:
        if started is None:
            self.missed += 1
            return
        self.from_call_ms.append((started - called) * 1000)
        self.from_return_ms.append((started - returned) * 1000)

    def as_dict(self) -> dict:
        return {"from_call_ms": self.from_call_ms, "from_return_ms": self.from_return_ms, "missed": self.missed}


def idle_gap(gap: float) -> None:
    """The worker is left idle `gap` seconds, and up to 10 ms more, before each urgent task."""
    time.sleep(gap + random.random() * 0.01)


# -- the command line of a side script ----------------------------------------------------------


def side_main(doc: str, workloads: dict[str, Callable], reset: Callable[[], object]) -> None:
    """Parse the workload and its options, run it between two resets of the peer's state, and
    print its figures as one JSON line."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("workload", choices=sorted(workloads))
    p.add_argument("--n", type=int, default=10_000, help="tasks enqueued or drained")
    p.add_argument("--batch", type=int, default=1000, help="tasks per bulk call")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--budget", type=float, default=30.0, help="drain: seconds after the first task done")
    p.add_argument("--backlog", type=int, default=10_000, help="latency: tasks queued below")
    p.add_argument("--samples", type=int, default=100, help="latency: urgent tasks measured")
    p.add_argument("--warmup", type=int, default=5, help="latency: urgent tasks not measured")
    p.add_argument("--gap", type=float, default=0.03, help="latency: idle seconds before each")
    p.add_argument("--cap", type=float, default=30.0, help="latency without priority: longest wait")
    p.add_argument("--log-dir", default=".", help="where the worker's log goes")
    args = p.parse_args()

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)  # so `finally` stops the worker

    signal.signal(signal.SIGTERM, terminate)
    reset()
    try:
        emit(workloads[args.workload](args))
    finally:
        reset()
