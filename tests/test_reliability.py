"""Faults at scale: killed workers, a killed broker, a cluster that loses a node, a database that
goes away, a poison task, races, and the whole stream replayed. Each scenario dispatches real
tasks that record their effect (demo.record), then classifies every task (tests.support.harness.classify)
and requires 0 lost, 0 duplicated, 0 unexpected, 0 stuck. The figures are printed with a
`reliability:` prefix; docs/reliability.md holds those of a full run.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from core.broker.embedded import NatsServer
from core.broker.messages import TaskMessage
from core.engine.leases import claim
from core.errors import Conflict, DatabaseUnavailable, WrongState
from core.observe.snapshot import OverviewSnapshot
from core.observe.stats import relay_backlog
from core.priority import priority_to_bucket, subject_for
from core.runtime import Runtime
from core.tasks.builtin import registry_for
from core.tasks.rows import DispatchRequest
from db.engine import Database
from db.models import PriorityHistory, Task, TaskStatus, utcnow
from tests.support.constants import ROLE_USERS
from tests.support.harness import (
    FAULT_TASKS,
    NatsCluster,
    Recorder,
    TcpProxy,
    WorkerProcesses,
    classify,
    upgrade_all_at_once,
    wait_settled,
    wait_until,
    worker_prefix,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

RACE_LEASE = timedelta(seconds=30)
FAST = dict(
    lease_seconds=2.0,
    reaper_interval_seconds=0.5,
    relay_interval_seconds=0.2,
    reconcile_interval_seconds=2.0,
    ack_wait_seconds=3.0,
    broker_timeout_seconds=1.0,
)


def report(scenario: str, **figures) -> None:
    print(f"\nreliability: {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def record_requests(
    count: int, rng: random.Random, *, min_seconds: float = 0.0, max_seconds: float = 0.03
) -> list[DispatchRequest]:
    return [
        DispatchRequest(
            "demo.record",
            {"value": i, "seconds": round(rng.uniform(min_seconds, max_seconds), 4)},
            priority=rng.randint(0, 10),
            max_attempts=20,
        )
        for i in range(count)
    ]


def dispatch_all(runtime: Runtime, requests: list[DispatchRequest], batch: int = 200) -> list[str]:
    ids: list[str] = []
    for offset in range(0, len(requests), batch):
        ids += runtime.service.dispatch_tasks(requests[offset : offset + batch], created_by="test")
    return ids


def running_on(db: Database, pid: int) -> set[str]:
    with db.session() as session:
        return set(
            session.scalars(
                select(Task.id).where(Task.status == TaskStatus.RUNNING, Task.worker_id.startswith(worker_prefix(pid)))
            )
        )


class OrphanWatch:
    """After a kill: how long until each task the dead worker held is out of its hands again."""

    def __init__(self, db: Database):
        self.db = db
        self.delays: list[float] = []
        self._open: list[tuple[float, int, set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def killed(self, pid: int, at: float) -> None:
        held = running_on(self.db, pid)
        if held:
            self._open.append((at, pid, held))

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            still_open = []
            for at, pid, held in self._open:
                remaining = running_on(self.db, pid) & held
                now = time.monotonic()
                self.delays += [now - at] * (len(held) - len(remaining))
                if remaining:
                    still_open.append((at, pid, remaining))
            self._open = still_open

    def all_released(self) -> bool:
        return not self._open

    def close(self) -> int:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return sum(len(held) for _, _, held in self._open)


@pytest.fixture
def fast(settings):
    return replace(settings, **FAST)


def open_runtime(settings, timeout: float = 60.0) -> Runtime:
    """Runtime.open, retried while a broker (a forming cluster) is not ready yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Runtime.open(settings, require_broker=True)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_rel001_killed_workers_lose_nothing_and_run_nothing_twice(fast):
    rng = random.Random(1)
    runtime = Runtime.open(fast, require_broker=True)
    pool = None
    single = OrphanWatch(runtime.db)  # other workers alive: their reapers take the orphans back
    everyone = OrphanWatch(runtime.db)  # nobody alive until the restart
    try:
        ids = dispatch_all(runtime, record_requests(2000, rng, min_seconds=0.05, max_seconds=0.15))
        pool = WorkerProcesses(fast, 3, "--concurrency", "3")
        for _ in range(2):
            for _ in range(5):
                pool.wait_ready(runtime.db)  # the others are up, so their reapers are running
                time.sleep(rng.uniform(0.3, 0.8))
                index = rng.randrange(len(pool.processes))
                pid = pool.processes[index].pid
                at = time.monotonic()
                pool.kill(index)
                single.killed(pid, at)
                pool.restart_dead()
            # Let those orphans be taken back by live reapers before killing everyone.
            wait_until(single.all_released, timeout=30, message="single-kill orphans released")
            pool.wait_ready(runtime.db)
            time.sleep(1.0)
            pids = [process.pid for process in pool.processes]
            for index in range(len(pool.processes)):
                pool.kill(index)
            time.sleep(0.5)
            restarted_at = time.monotonic()
            for pid in pids:
                everyone.killed(pid, restarted_at)
            pool.restart_dead()
        settle = wait_settled(runtime.db, ids, timeout=180)
        never_released = single.close() + everyone.close()
        verdict = classify(runtime.db, ids)
        bound = fast.lease_seconds + fast.reaper_interval_seconds
        worst_single = max(single.delays, default=0.0)
        worst_all = max(everyone.delays, default=0.0)
        report(
            "killed workers",
            tasks=len(ids),
            single_kills=10,
            kill_all=2,
            verdict=dict(verdict.counts),
            orphans_single=len(single.delays),
            orphan_release_max_s=round(worst_single, 2),
            orphans_kill_all=len(everyone.delays),
            orphan_release_after_restart_max_s=round(worst_all, 2),
            bound_s=bound,
            settle_s=round(settle, 1),
        )
        assert verdict.bad == {}, str(verdict)
        assert verdict.counts["ok"] == 2000
        assert single.delays and everyone.delays, "the kills caught no running task: the scenario proved nothing"
        assert never_released == 0
        # Polling every 50 ms on a loaded machine: half a second over lease + reaper interval.
        assert worst_single <= bound + 0.5, f"an orphan waited {worst_single:.2f}s (lease + reaper = {bound}s)"
        # After killing everyone, the clock starts at the restart; a worker process needs a few
        # seconds to start (imports, connections) before its reaper runs.
        assert worst_all <= bound + 5.0, f"an orphan waited {worst_all:.2f}s after the restart"
    finally:
        single.close()
        everyone.close()
        if pool is not None:
            pool.stop()
        runtime.close()


def test_rel002_killed_broker_loses_nothing(tmp_path, fast):
    server = NatsServer(tmp_path / "nats", sync_always=True).start()
    settings = replace(fast, nats_url=server.url)
    runtime = Runtime.open(settings, require_broker=True)
    pool = None
    rng = random.Random(2)
    try:
        requests = record_requests(1500, rng, max_seconds=0.01)
        ids: list[str] = []
        dispatch_errors: list[str] = []

        def produce() -> None:
            for offset in range(0, len(requests), 50):
                ids.extend(runtime.service.dispatch_tasks(requests[offset : offset + 50], created_by="test"))
                if runtime.service.last_publish_error:
                    dispatch_errors.append(runtime.service.last_publish_error)
                time.sleep(0.05)

        pool = WorkerProcesses(settings, 2, "--concurrency", "4")
        producer = threading.Thread(target=produce)
        producer.start()
        kills = 0
        for _ in range(3):
            time.sleep(rng.uniform(0.8, 1.5))
            server.kill()
            kills += 1
            time.sleep(1.0)
            server.start()
        producer.join()
        settle = wait_settled(runtime.db, ids, timeout=180)
        backlog = relay_backlog(runtime.db)
        with runtime.db.session() as session:
            unpublished = session.scalar(
                select(Task.id).where(Task.id.in_(ids), Task.publish_due_at.is_not(None)).limit(1)
            )
        verdict = classify(runtime.db, ids)
        report(
            "killed broker",
            tasks=len(ids),
            broker_kills=kills,
            dispatches_while_broker_down=len(dispatch_errors),
            verdict=dict(verdict.counts),
            relay_backlog=backlog,
            settle_s=round(settle, 1),
        )
        assert verdict.bad == {}, str(verdict)
        assert verdict.counts["ok"] == 1500
        assert dispatch_errors, "no dispatch met the broker down: the scenario proved nothing"
        assert backlog == 0 and unpublished is None
    finally:
        if pool is not None:
            pool.stop()
        runtime.close()
        server.stop()


def test_rel003_cluster_keeps_processing_when_a_node_stops(tmp_path, settings):
    cluster = NatsCluster(tmp_path / "cluster").start()
    clustered = replace(
        settings,
        **{**FAST, "broker_timeout_seconds": 3.0},
        nats_url=cluster.url,
        stream_replicas=3,
        stream_name="SWITCHYARD_R3",
    )
    runtime = open_runtime(clustered)
    pool = None
    rng = random.Random(3)
    try:
        ids = dispatch_all(runtime, record_requests(600, rng, max_seconds=0.01))
        pool = WorkerProcesses(clustered, 2, "--concurrency", "4")
        wait_until(lambda: classify(runtime.db, ids).counts["ok"] >= 150, timeout=60, message="first tasks done")
        cluster.nodes[0].kill()
        stopped_at = time.monotonic()
        more = dispatch_all(runtime, record_requests(300, rng, max_seconds=0.01))
        settle = wait_settled(runtime.db, ids + more, timeout=180)
        verdict = classify(runtime.db, ids + more)
        with runtime.db.session() as session:
            finished_after_stop = session.scalar(
                select(Task.id).where(Task.id.in_(more), Task.status == TaskStatus.SUCCEEDED).limit(1)
            )
        report(
            "cluster node stopped",
            nodes=3,
            replicas=3,
            tasks=len(ids) + len(more),
            verdict=dict(verdict.counts),
            settle_after_stop_s=round(time.monotonic() - stopped_at, 1),
        )
        assert verdict.bad == {}, str(verdict)
        assert verdict.counts["ok"] == 900 and finished_after_stop is not None and settle < 180
    finally:
        if pool is not None:
            pool.stop()
        runtime.close()
        cluster.stop()


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1].split("?", 1)[0]


def test_rel004_database_briefly_unavailable_is_reported_and_survived(tmp_path, fast, database_url):
    """PostgreSQL: connections refused and cut (a proxy goes away). SQLite: another process holds
    the write lock longer than the busy timeout."""
    proxy = None
    if database_url.startswith("postgresql"):
        real = make_url(database_url)
        proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432).up()
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    else:
        url = f"{database_url}?timeout=1"
    settings = replace(fast, database_url=url)
    runtime = Runtime.open(settings, require_broker=True)
    snapshot = OverviewSnapshot(runtime.db, runtime.broker)
    pool = None
    lock = None
    rng = random.Random(4)
    try:
        ids = dispatch_all(runtime, record_requests(600, rng, max_seconds=0.02))
        pool = WorkerProcesses(settings, 2, "--concurrency", "4")
        wait_until(lambda: classify(runtime.db, ids).counts["ok"] >= 100, timeout=60, message="first tasks done")
        if proxy is not None:
            proxy.down()
        else:
            lock = sqlite3.connect(_sqlite_path(url), timeout=5, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
        outage_started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as refused:
            runtime.service.dispatch_task("demo.record", args={"value": "during the outage"})
        message = str(refused.value)
        overview_errors = snapshot.compute()["errors"]
        with pytest.raises(DatabaseUnavailable) as refused_upgrade:
            runtime.service.upgrade_task(ids[-1], "critical", "during the outage", ROLE_USERS["admin"])
        upgrade_error = str(refused_upgrade.value)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - outage_started)))
        if proxy is not None:
            proxy.up()
        else:
            lock.execute("COMMIT")
            lock.close()
        settle = wait_settled(runtime.db, ids, timeout=180)
        verdict = classify(runtime.db, ids)
        pool.stop()
        worker_logs = pool.logs()
        report(
            "database unavailable",
            backend="postgresql" if proxy else "sqlite",
            outage_s=3,
            tasks=len(ids),
            verdict=dict(verdict.counts),
            settle_s=round(settle, 1),
            dispatch_error=message,
        )
        assert message.startswith("database unavailable: ") and "\n" not in message
        if proxy is not None:
            assert any(e.startswith("database unavailable: ") for e in overview_errors), overview_errors
        else:  # WAL: a writer's lock does not stop readers, so the console still shows the queues
            assert overview_errors == []
        assert upgrade_error.startswith("database unavailable: ") and "\n" not in upgrade_error
        assert verdict.bad == {}, str(verdict)
        assert verdict.counts["ok"] == 600
        assert "database unavailable: " in worker_logs and "Traceback" not in worker_logs
    finally:
        if pool is not None:
            pool.stop()
        if proxy is not None:
            proxy.down()
        runtime.close()


def test_rel005_poison_task_fails_after_its_attempts_and_work_keeps_flowing(fast):
    fast = replace(fast, task_modules=(FAULT_TASKS,))
    runtime = Runtime.open(fast, registry=registry_for(fast), require_broker=True)
    pool = None
    rng = random.Random(5)
    try:
        poison = runtime.service.dispatch_tasks(
            [DispatchRequest("test.poison", {}, priority=9, max_attempts=3)], created_by="test"
        )
        ids = dispatch_all(runtime, record_requests(300, rng, max_seconds=0.02))
        pool = WorkerProcesses(fast, 3, "--concurrency", "2")
        deaths = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            deaths += pool.restart_dead()  # what systemd or a container runtime would do
            if classify(runtime.db, ids + poison, may_fail=set(poison)).counts["ok"] == 301:
                break
            time.sleep(0.1)
        with runtime.db.session() as session:
            poisoned = session.get(Task, poison[0])
        verdict = classify(runtime.db, ids + poison, may_fail=set(poison))
        report(
            "poison task",
            tasks=301,
            worker_deaths=deaths,
            poison_status=poisoned.status,
            poison_attempts=poisoned.attempts,
            verdict=dict(verdict.counts),
        )
        assert poisoned.status == TaskStatus.FAILED and poisoned.attempts == 3
        assert "no attempts left (3 of 3)" in poisoned.error
        assert deaths == 3
        assert verdict.bad == {}, str(verdict)
    finally:
        if pool is not None:
            pool.stop()
        runtime.close()


def test_rel006_fifty_concurrent_upgrades_have_one_winner(runtime):
    task_id = runtime.service.dispatch_task("demo.echo", priority=1)
    outcomes = upgrade_all_at_once(runtime.service, task_id, 50, "all at once")
    with runtime.db.session() as session:
        history = session.scalars(select(PriorityHistory).where(PriorityHistory.task_id == task_id)).all()
        row = session.get(Task, task_id)
    report("50 concurrent upgrades", backend=runtime.db.url.get_backend_name(), winners=outcomes.count("won"))
    assert outcomes.count("won") == 1 and len(outcomes) == 50
    assert len(history) == 1 and (row.priority, row.generation, row.bucket) == (9, 2, "high")


def test_rel007_upgrade_cancel_and_claim_race_with_one_winner_per_round(runtime):
    """Three contenders for the same queued generation, started together, 1,000 times: the
    claim (as a worker does it), an upgrade and a cancel. Exactly one wins the generation; the
    task is never both running and requeued or cancelled."""
    service, db = runtime.service, runtime.db
    rounds = 1000
    ids = service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=2) for n in range(rounds)])
    results: dict[str, dict[str, bool]] = {}
    tally = {"claim": 0, "upgrade": 0, "cancel": 0}
    for task_id in ids:
        barrier = threading.Barrier(3)
        won: dict[str, bool] = {}

        def do_claim() -> None:
            barrier.wait()
            with db.connect(write=True) as connection:
                claimed = claim(connection, TaskMessage(task_id, 1, "x"), None, "racer", RACE_LEASE, utcnow())
            won["claim"] = claimed is not None

        def do_upgrade() -> None:
            barrier.wait()
            try:
                service.upgrade_task(task_id, "critical", "race", ROLE_USERS["admin"])
                won["upgrade"] = True
            except (Conflict, WrongState):
                won["upgrade"] = False

        def do_cancel() -> None:
            barrier.wait()
            try:
                service.cancel_task(task_id, ROLE_USERS["admin"])
                won["cancel"] = True
            except (Conflict, WrongState):
                won["cancel"] = False

        threads = [threading.Thread(target=f) for f in (do_claim, do_upgrade, do_cancel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results[task_id] = won
    with db.session() as session:
        rows = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(ids)))}
        upgraded = set(session.scalars(select(PriorityHistory.task_id).where(PriorityHistory.task_id.in_(ids))))
    inconsistent = []
    for task_id, won in results.items():
        row = rows[task_id]
        # The first to commit on generation 1 wins it. A cancel may legitimately follow a
        # successful upgrade (it then acts on generation 2); nothing may follow a claim.
        first = "claim" if won["claim"] else "upgrade" if won["upgrade"] else "cancel" if won["cancel"] else None
        tally[first or "none"] = tally.get(first or "none", 0) + 1
        if won["claim"]:
            ok = not won["upgrade"] and not won["cancel"] and row.status == TaskStatus.RUNNING
            ok = ok and row.generation == 1 and task_id not in upgraded
        elif won["upgrade"]:
            ok = task_id in upgraded and row.status == (TaskStatus.CANCELLED if won["cancel"] else TaskStatus.QUEUED)
        elif won["cancel"]:
            ok = row.status == TaskStatus.CANCELLED and row.generation == 2 and task_id not in upgraded
        else:
            ok = False
        if not ok:
            inconsistent.append((task_id, won, row.status, row.generation))
    report("upgrade vs cancel vs claim", backend=db.url.get_backend_name(), rounds=rounds, first_winner=tally)
    assert not inconsistent, inconsistent[:5]
    assert sum(tally[k] for k in ("claim", "upgrade", "cancel")) == rounds


def test_rel008_the_whole_stream_replayed_runs_nothing_twice(runtime, start_worker):
    """Every message ever published (old generations of upgraded tasks included) published again,
    under fresh message ids so the duplicate window cannot hide them."""
    service, broker = runtime.service, runtime.broker
    priorities = [n % 8 for n in range(400)]
    ids = service.dispatch_tasks(
        [DispatchRequest("demo.record", {"value": n}, priority=p) for n, p in enumerate(priorities)]
    )
    first_subject = {
        task_id: subject_for("report", "default", priority_to_bucket(p)) for task_id, p in zip(ids, priorities)
    }
    upgraded = ids[::5]
    for task_id in upgraded:
        service.upgrade_task(task_id, "urgent", "replay test", ROLE_USERS["manager"])
    replay = [(task_id, 1, first_subject[task_id]) for task_id in ids]
    replay += [(task_id, 2, subject_for("report", "default", "high")) for task_id in upgraded]
    recorder = Recorder()
    start_worker(recorder, concurrency=4)
    recorder.wait_for(lambda: len(set(recorder.of("succeeded"))) == 400, timeout=120)
    js = broker.broker.js

    async def republish() -> None:
        for n, (task_id, generation, subject) in enumerate(replay):
            body = TaskMessage(task_id, generation, subject).encode()
            await js.publish(subject, body, headers={"Nats-Msg-Id": f"replay-{n}"})
        await broker.broker.ring()

    broker.run(republish())
    recorder.wait_for(lambda: len(recorder.of("dropped")) >= len(replay), timeout=120)
    verdict = classify(runtime.db, ids)
    report(
        "stream replayed",
        tasks=400,
        replayed_messages=len(replay),
        dropped=len(recorder.of("dropped")),
        started=len(recorder.of("started")),
        verdict=dict(verdict.counts),
    )
    assert verdict.bad == {} and verdict.counts["ok"] == 400, str(verdict)
    assert len(recorder.of("started")) == 400
