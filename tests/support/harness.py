"""Real processes for fault scenarios: worker processes, a NATS cluster, a TCP proxy that can
refuse connections, and the ledger that classifies every task after a scenario; and the in-process
helpers the fixtures and tests share (settings, a clean stream, an event recorder, polling)."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import nats
from nats.js.errors import NotFoundError
from sqlalchemy import create_engine, func, make_url, select

from core.broker.embedded import NatsServer, free_port, port_open
from core.errors import Conflict, NotAnUpgrade
from core.settings import Settings
from db.engine import Database
from db.models import Task, TaskEffect, TaskStatus, WorkerRecord
from tests.support.constants import ROLE_USERS, ROOT

FAULT_TASKS = "tests.support.fault_tasks"


# -- in-process helpers (used by the fixtures in tests/conftest.py and by the tests) ------------


def make_settings(tmp_path: Path, nats_url: str, database_url: str, **overrides) -> Settings:
    values = dict(
        data_dir=tmp_path,
        nats_url=nats_url,
        database_url=database_url,
        lease_seconds=2.0,
        reaper_interval_seconds=0.3,
        relay_interval_seconds=0.2,
        reconcile_interval_seconds=1.0,
        idle_resweep_seconds=0.5,
        retry_backoff_seconds=0.05,
        retry_backoff_max_seconds=0.2,
        broker_timeout_seconds=2.0,
    )
    values.update(overrides)
    return Settings(**values)


@contextmanager
def private_database(server_url: str) -> Iterator[str]:
    """Create a uniquely named PostgreSQL database next to server_url's, yield its URL, drop it."""
    server = make_url(server_url)
    name = f"switchyard_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def reset_stream(url: str, stream: str) -> None:
    async def reset() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jsm().delete_stream(stream)
        except NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(reset())


class Recorder:
    """Collects worker events in order: ('started', task_id), ('succeeded', task_id) ..."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, event: str, task_id: str) -> None:
        with self._changed:
            self.events.append((event, task_id))
            self._changed.notify_all()

    def of(self, kind: str) -> list[str]:
        with self._lock:
            return [task for event, task in self.events if event == kind]

    def counts(self, kind: str) -> dict[str, int]:
        counted: dict[str, int] = defaultdict(int)
        for task in self.of(kind):
            counted[task] += 1
        return counted

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; events so far: {self.events[-20:]}")
                self._changed.wait(min(remaining, 0.1))


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message}")
        time.sleep(interval)


# -- worker processes and the CLI ---------------------------------------------------------------


def upgrade_all_at_once(service, task_id: str, contenders: int, reason: str) -> list[str]:
    """`contenders` threads upgrade one task to urgent at the same instant; each one's outcome:
    "won" or the name of the refusal (Conflict, NotAnUpgrade)."""
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []

    def upgrade() -> None:
        barrier.wait()
        try:
            service.upgrade_task(task_id, "urgent", reason, ROLE_USERS["manager"])
            outcomes.append("won")
        except (Conflict, NotAnUpgrade) as error:
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=upgrade) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def run_cli(settings: Settings, *args: str, extra_env: dict | None = None, expect: int | None = 0):
    """`python run.py ARGS` with the settings of `settings`; never a traceback, `expect` its exit code."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        env=settings_env(settings, **(extra_env or {})),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if expect is not None:
        assert result.returncode == expect, (args, result.returncode, result.stdout, result.stderr)
    return result


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a `run.py` child process the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_DATA_DIR=str(settings.data_dir),
        SWITCHYARD_NATS_URL=settings.nats_url,
        SWITCHYARD_DATABASE_URL=settings.database_url,
        SWITCHYARD_LEASE_SECONDS=str(settings.lease_seconds),
        SWITCHYARD_REAPER_INTERVAL_SECONDS=str(settings.reaper_interval_seconds),
        SWITCHYARD_RELAY_INTERVAL_SECONDS=str(settings.relay_interval_seconds),
        SWITCHYARD_RECONCILE_INTERVAL_SECONDS=str(settings.reconcile_interval_seconds),
        SWITCHYARD_IDLE_RESWEEP_SECONDS=str(settings.idle_resweep_seconds),
        SWITCHYARD_RETRY_BACKOFF_SECONDS=str(settings.retry_backoff_seconds),
        SWITCHYARD_RETRY_BACKOFF_MAX_SECONDS=str(settings.retry_backoff_max_seconds),
        SWITCHYARD_BROKER_TIMEOUT_SECONDS=str(settings.broker_timeout_seconds),
        SWITCHYARD_ACK_WAIT_SECONDS=str(settings.ack_wait_seconds),
        SWITCHYARD_STREAM_NAME=settings.stream_name,
        SWITCHYARD_STREAM_REPLICAS=str(settings.stream_replicas),
        SWITCHYARD_TASK_MODULES=FAULT_TASKS,
    )
    env.update(extra)
    return env


def spawn_worker(settings: Settings, *args: str, log: Path, **env: str) -> subprocess.Popen:
    """A `run.py worker` process; its log goes to a file (a pipe nobody reads would fill up)."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "worker", *args],
            env=settings_env(settings, **env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=output,
        )


class WorkerProcesses:
    """Several `run.py worker` processes, to be killed and restarted at will. All their logs go
    to one file under the settings' data folder (`logs()`)."""

    def __init__(self, settings: Settings, count: int, *args: str):
        self.settings = settings
        self.args = args
        self.log = Path(settings.data_dir) / f"workers-{os.getpid()}-{time.monotonic_ns()}.log"
        self.processes: list[subprocess.Popen] = [self._spawn() for _ in range(count)]
        self.kills: list[tuple[float, int]] = []  # (monotonic time, pid)

    def _spawn(self) -> subprocess.Popen:
        return spawn_worker(self.settings, *self.args, log=self.log)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, index: int) -> int:
        process = self.processes[index]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills.append((time.monotonic(), process.pid))
        return process.pid

    def kill_random(self, rng: random.Random) -> int:
        return self.kill(rng.randrange(len(self.processes)))

    def wait_ready(self, db: Database, timeout: float = 60.0) -> None:
        """Until every live process has registered as a worker (connected, topology checked)."""
        deadline = time.monotonic() + timeout
        while True:
            with db.session() as session:
                registered = set(session.scalars(select(WorkerRecord.pid).where(WorkerRecord.stopped_at.is_(None))))
            alive = {p.pid for p in self.processes if p.poll() is None}
            if alive <= registered:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {sorted(alive - registered)} did not come up in {timeout:.0f}s")
            time.sleep(0.1)

    def restart_dead(self) -> int:
        restarted = 0
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                self.processes[index] = self._spawn()
                restarted += 1
        return restarted

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def worker_prefix(pid: int) -> str:
    """tasks.worker_id of a worker process starts with this."""
    return f"{socket.gethostname()}:{pid}:"


# -- the ledger ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, task_id: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(task_id)

    @property
    def bad(self) -> dict[str, int]:
        return {kind: n for kind, n in self.counts.items() if kind != "ok" and n}

    def __str__(self) -> str:
        return f"{dict(self.counts)} examples={ {k: v for k, v in self.examples.items() if k != 'ok'} }"


def classify(
    db: Database, task_ids: list[str], *, cancelled: set[str] = frozenset(), may_fail: set[str] = frozenset()
) -> Verdict:
    """Each dispatched task, after a scenario:
    ok          exactly one effect, from its current generation, and succeeded (or cancelled with
                no effect, or failed when it was meant to);
    lost        no row, or finished without its effect, or failed when it should not have;
    duplicated  more than one effect;
    unexpected  an effect of a cancelled task, or of a generation that was superseded;
    stuck       still queued or running."""
    verdict = Verdict()
    with db.session() as session:
        rows = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(task_ids))).all()} if task_ids else {}
        effects: dict[str, list[int]] = {}
        for task_id, generation in session.execute(
            select(TaskEffect.task_id, TaskEffect.generation).where(TaskEffect.task_id.in_(task_ids))
        ):
            effects.setdefault(task_id, []).append(generation)
    for task_id in task_ids:
        row = rows.get(task_id)
        generations = effects.get(task_id, [])
        if row is None:
            verdict.add("lost", task_id)
        elif len(generations) > 1:
            verdict.add("duplicated", task_id)
        elif row.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            verdict.add("stuck", _state(row))
        elif row.status == TaskStatus.CANCELLED:
            verdict.add("unexpected" if generations or task_id not in cancelled else "ok", task_id)
        elif row.status == TaskStatus.FAILED:
            verdict.add("ok" if task_id in may_fail and not generations else "lost", task_id)
        elif not generations:
            verdict.add("lost", task_id)
        elif generations[0] != row.generation:
            verdict.add("unexpected", task_id)
        else:
            verdict.add("ok", task_id)
    return verdict


def _state(task: Task) -> str:
    """A stuck task's id and where it stands, for the failure message."""
    return (
        f"{task.id} {task.status} gen={task.generation} published={task.published_generation} "
        f"seq={task.stream_seq} attempts={task.attempts} worker={task.worker_id} lease={task.lease_expires_at}"
    )


def unfinished(db: Database, task_ids: list[str]) -> int:
    with db.session() as session:
        return session.scalar(
            select(func.count())
            .select_from(Task)
            .where(Task.id.in_(task_ids), Task.status.in_((TaskStatus.QUEUED, TaskStatus.RUNNING)))
        )


def wait_settled(db: Database, task_ids: list[str], timeout: float) -> float:
    """Wait until no task is queued or running; returns the seconds it took (the caller checks
    `classify` either way, so a timeout shows up as stuck tasks)."""
    started = time.monotonic()
    chunks = [task_ids[i : i + 500] for i in range(0, len(task_ids), 500)]
    while time.monotonic() - started < timeout:
        if sum(unfinished(db, chunk) for chunk in chunks) == 0:
            break
        time.sleep(0.2)
    return time.monotonic() - started


# -- a NATS cluster -----------------------------------------------------------------------------


class NatsCluster:
    """Three nats-server processes from the wheel on loopback, routed into one JetStream cluster."""

    def __init__(self, root: Path, size: int = 3):
        self.client_ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)]
        self.nodes: list[NatsServer] = []
        for index in range(size):
            routes = ", ".join(
                f"nats-route://127.0.0.1:{port}" for i, port in enumerate(self.cluster_ports) if i != index
            )
            extra = (
                f"cluster {{\n  name: switchyard-test\n  listen: 127.0.0.1:{self.cluster_ports[index]}\n"
                f"  routes: [{routes}]\n}}\n"
            )
            self.nodes.append(
                NatsServer(
                    root / f"node{index}",
                    port=self.client_ports[index],
                    server_name=f"node{index}",
                    sync_always=True,
                    extra_config=extra,
                )
            )

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> "NatsCluster":
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# -- a TCP proxy whose far side can go away -----------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:port to target. `down()` closes the listening socket and every open
    connection (clients see 'connection refused' and resets); `up()` listens again."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        deadline = time.monotonic() + 5
        while not port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone leaves a listener that another thread is blocked in accept() on
            # accepting one more connection; shutdown() wakes that accept() first.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        _hang_up(*connections)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down while this one was connecting
                    _hang_up(client, server)
                    return
                self._connections.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _hang_up(source, sink)


def _hang_up(*ends: socket.socket) -> None:
    """shutdown() first: close() alone neither wakes a thread blocked in recv() on the socket nor
    ends the TCP connection, and a database session would stay open holding its locks."""
    for end in ends:
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()
