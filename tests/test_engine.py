"""The queue engine against a real nats-server and a real database (SQLite, and PostgreSQL
when SWITCHYARD_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from core.auth.audit import DENIED
from core.broker.messages import TaskMessage
from core.engine.leases import Finished, Outcome, claim_all, record_outcomes
from core.engine.maintenance import reap_expired_leases
from core.errors import Conflict, InvalidInput, NotAllowed, NotAnUpgrade, NotFound, WrongState
from core.observe.stats import broker_depths, database_stats
from core.priority import Bucket
from core.tasks.registry import TaskContext
from core.tasks.rows import DispatchRequest
from db.models import AuditLog, PriorityHistory, Task, TaskEffect, utcnow
from tests.support.constants import ROLE_USERS
from tests.support.harness import Recorder, upgrade_all_at_once, wait_until


def task_row(runtime, task_id) -> dict:
    return runtime.service.describe_task(task_id)


def history_count(runtime, task_id=None) -> int:
    with runtime.db.session() as session:
        query = select(func.count()).select_from(PriorityHistory)
        if task_id:
            query = query.where(PriorityHistory.task_id == task_id)
        return session.scalar(query)


def effects_of(runtime, task_id) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(TaskEffect).where(TaskEffect.task_id == task_id))


def depths(runtime) -> dict:
    """The broker's depths once what was dispatched has been published (dispatch returns on commit)."""
    assert runtime.service.flush(10)
    return runtime.broker.run(broker_depths(runtime.broker.broker))


def test_eng001_one_worker_takes_high_then_normal_then_low(runtime, start_worker):
    service = runtime.service
    ids = {}
    # Interleaved on purpose: stream order is low, normal, high, low, ...
    for round_ in range(4):
        for priority in (1, 5, 9):
            ids[service.dispatch_task("demo.echo", args={"n": round_}, priority=priority)] = priority
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: len(recorder.of("succeeded")) == len(ids))
    started_priorities = [ids[task] for task in recorder.of("started")]
    assert started_priorities == sorted(started_priorities, reverse=True)
    assert [Bucket(t["bucket"]) for t in map(lambda i: task_row(runtime, i), recorder.of("started"))][:4] == [
        Bucket.HIGH
    ] * 4


def test_eng002_low_task_upgraded_to_critical_runs_next(runtime, start_worker):
    service = runtime.service
    blocker = service.dispatch_task("demo.sleep", args={"seconds": 2.0}, priority=10)
    normal = [service.dispatch_task("demo.echo", priority=6) for _ in range(5)]
    low = [service.dispatch_task("demo.echo", priority=0) for _ in range(5)]
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: blocker in recorder.of("started"))
    result = service.upgrade_task(low[3], "critical", "customer is on the phone", ROLE_USERS["admin"])
    assert (result.from_bucket, result.to_bucket, result.requeued) == ("low", "high", True)
    recorder.wait_for(lambda: len(recorder.of("succeeded")) == 11)
    assert recorder.of("started")[:2] == [blocker, low[3]]
    assert set(recorder.of("started")[2:7]) == set(normal)
    row = task_row(runtime, low[3])
    assert (row["priority"], row["bucket"], row["status"], row["generation"]) == (10, "high", "succeeded", 2)
    assert recorder.of("dropped") == []  # the old low message was deleted, not left to be dropped


def test_eng003_cancelled_task_never_runs(runtime, start_worker):
    service = runtime.service
    doomed = service.dispatch_task("demo.record", args={"value": "doomed"}, priority=4)
    kept = service.dispatch_task("demo.record", args={"value": "kept"}, priority=4)
    assert depths(runtime)["buckets"]["normal"] == 2
    service.cancel_task(doomed, ROLE_USERS["manager"])
    assert depths(runtime)["buckets"]["normal"] == 1  # deleted from the stream by sequence
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: kept in recorder.of("succeeded"))
    time.sleep(0.5)
    assert doomed not in recorder.of("started")
    assert task_row(runtime, doomed)["status"] == "cancelled"
    assert effects_of(runtime, doomed) == 0
    with pytest.raises(WrongState, match="is cancelled: only queued tasks can be cancelled"):
        service.cancel_task(doomed, ROLE_USERS["manager"])


def test_eng004_retry_reruns_a_failed_task_at_its_original_priority(runtime, start_worker, registry):
    attempts = []

    @registry.task("test.flaky", category="webapp")
    def flaky(ctx, **_):
        attempts.append(ctx.priority)
        if len(attempts) == 1:
            raise RuntimeError("first run fails")
        return "second run works"

    service = runtime.service
    task_id = service.dispatch_task("test.flaky", priority=2, max_attempts=1)
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: task_id in recorder.of("failed"))
    failed = task_row(runtime, task_id)
    assert failed["status"] == "failed" and "RuntimeError: first run fails" in failed["error"]
    service.retry_task(task_id, ROLE_USERS["operator"])
    recorder.wait_for(lambda: task_id in recorder.of("succeeded"))
    done = task_row(runtime, task_id)
    assert (done["status"], done["priority"], done["bucket"], done["result"]) == (
        "succeeded",
        2,
        "low",
        "second run works",
    )
    assert attempts == [2, 2]
    with pytest.raises(WrongState, match="only failed tasks can be retried"):
        service.retry_task(task_id, ROLE_USERS["operator"])


def test_eng005_automatic_retries_with_backoff_then_failed(runtime, start_worker):
    task_id = runtime.service.dispatch_task("demo.fail", args={"message": "boom"}, priority=5, max_attempts=3)
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: task_id in recorder.of("failed") and len(recorder.of("started")) == 3)
    wait_until(lambda: task_row(runtime, task_id)["status"] == "failed", message="task failed for good")
    row = task_row(runtime, task_id)
    assert row["attempts"] == 3 and row["generation"] == 3 and "DemoFailure: boom" in row["error"]


# Which role may do what, typed out from docs/architecture.md, "Roles and permissions" (retry needs prioritize_tasks).
ALLOWED = {
    "viewer": set(),
    "operator": {"prioritize", "retry"},
    "manager": {"prioritize", "urgent", "cancel", "retry"},
    "admin": {"prioritize", "urgent", "critical", "cancel", "retry"},
}


@pytest.mark.parametrize("role", sorted(ALLOWED))
@pytest.mark.parametrize("action", ["prioritize", "urgent", "critical", "cancel", "retry"])
def test_eng006_permission_matrix(runtime, role, action):
    service = runtime.service
    user = ROLE_USERS[role]
    if action == "retry":
        task_id = service.dispatch_task("demo.fail", priority=1)
        with runtime.db.session(write=True) as session:  # as if it had failed: no worker in this test
            session.get(Task, task_id).status = "failed"
    else:
        task_id = service.dispatch_task("demo.echo", priority=1)
    assert service.flush(10)  # published and recorded: nothing changes the row behind the test
    before = task_row(runtime, task_id)

    def act():
        if action == "cancel":
            service.cancel_task(task_id, user)
        elif action == "retry":
            service.retry_task(task_id, user)
        else:
            service.upgrade_task(task_id, action, "matrix", user)

    if action in ALLOWED[role]:
        act()
        after = task_row(runtime, task_id)
        expected_status = {"cancel": "cancelled", "retry": "queued"}.get(action, "queued")
        assert after["status"] == expected_status
        if action in ("prioritize", "urgent", "critical"):
            assert after["priority"] == {"prioritize": 8, "urgent": 9, "critical": 10}[action]
            assert history_count(runtime, task_id) == 1
    else:
        with pytest.raises(NotAllowed, match=f"not allowed: {role} '{user}' may not"):
            act()
        assert task_row(runtime, task_id) == before
        assert history_count(runtime, task_id) == 0
        with runtime.db.session() as session:
            denial = session.scalars(select(AuditLog).where(AuditLog.target == task_id)).one()
        assert (denial.actor, denial.outcome, denial.action) == (user, DENIED, action)


def test_eng007_unknown_and_disabled_users_are_refused(runtime):
    service = runtime.service
    task_id = service.dispatch_task("demo.echo", priority=1)
    with runtime.db.session(write=True) as session:
        from db.models import User

        session.scalars(select(User).where(User.username == ROLE_USERS["admin"])).one().active = False
    for user in ("nobody", ROLE_USERS["admin"], "", None, "x" * 500):
        with pytest.raises(NotAllowed, match="does not exist or is disabled"):
            service.upgrade_task(task_id, "critical", "why not", user)
    assert task_row(runtime, task_id)["priority"] == 1


def test_eng008_thirty_concurrent_upgrades_give_one_history_row(runtime):
    service = runtime.service
    task_id = service.dispatch_task("demo.echo", priority=2)
    outcomes = upgrade_all_at_once(service, task_id, 30, "everyone clicked")
    assert outcomes.count("won") == 1 and len(outcomes) == 30
    assert history_count(runtime, task_id) == 1
    row = task_row(runtime, task_id)
    assert (row["priority"], row["generation"]) == (9, 2)
    assert depths(runtime)["buckets"] == {"high": 1, "normal": 0, "low": 0}


def test_eng009_upgrade_racing_claim_never_runs_a_task_twice(runtime, start_worker):
    service = runtime.service
    recorder = Recorder()
    start_worker(recorder, concurrency=4)
    rounds = 150
    ids = []
    upgrades_won = 0
    for n in range(rounds):
        task_id = service.dispatch_task("demo.record", args={"value": n}, priority=n % 4)
        ids.append(task_id)
        if n % 3:
            time.sleep(0.0005 * (n % 7))  # vary who gets there first
        try:
            service.upgrade_task(task_id, "critical", "race", ROLE_USERS["admin"])
            upgrades_won += 1
        except (WrongState, Conflict):
            pass
    recorder.wait_for(lambda: len(recorder.of("succeeded")) == rounds, timeout=60)
    started = recorder.counts("started")
    assert all(started[task_id] == 1 for task_id in ids)
    assert all(effects_of(runtime, task_id) == 1 for task_id in ids)
    assert 0 < upgrades_won < rounds, upgrades_won  # the race really went both ways


def test_eng010_etl_phases_chain_with_one_correlation_id_and_keep_the_upgrade(runtime, start_worker):
    service = runtime.service
    extract = service.dispatch_task(
        "etl.extract", args={"source": "orders", "rows": 42}, priority=3, correlation_id="nightly-orders"
    )
    service.upgrade_task(extract, "prioritize", "finance close", ROLE_USERS["operator"])
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: len(recorder.of("succeeded")) == 3)
    with runtime.db.session() as session:
        tasks = session.scalars(
            select(Task).where(Task.correlation_id == "nightly-orders").order_by(Task.created_at)
        ).all()
    assert [(t.name, t.phase, t.priority, t.bucket, t.status) for t in tasks] == [
        ("etl.extract", "extract", 8, "high", "succeeded"),
        ("etl.transform", "transform", 8, "high", "succeeded"),
        ("etl.load", "load", 8, "high", "succeeded"),
    ]
    assert tasks[2].result == {"source": "orders", "loaded_rows": 42}
    assert effects_of(runtime, tasks[2].id) == 1


def test_eng011_bad_input_gets_a_clear_error_and_changes_nothing(runtime):
    service = runtime.service
    queued = service.dispatch_task("demo.echo", priority=5)
    high = service.dispatch_task("demo.echo", priority=9)
    with runtime.db.session(write=True) as session:
        session.get(Task, high).status = "running"
    snapshot = {i: task_row(runtime, i) for i in (queued, high)}
    admin, operator = ROLE_USERS["admin"], ROLE_USERS["operator"]
    cases = [
        (
            lambda: service.upgrade_task("no-such-task", "urgent", "r", admin),
            NotFound,
            "no task with id 'no-such-task'",
        ),
        (lambda: service.cancel_task("nope", admin), NotFound, "no task with id"),
        (lambda: service.retry_task("nope", admin), NotFound, "no task with id"),
        (lambda: service.upgrade_task(queued, "urgent", "r", operator), NotAllowed, "may not make tasks urgent"),
        (lambda: service.upgrade_task(queued, "ludicrous", "r", admin), InvalidInput, "unknown action 'ludicrous'"),
        (lambda: service.upgrade_task(queued, "urgent", "   ", admin), InvalidInput, "an upgrade needs a reason"),
        (lambda: service.upgrade_task(queued, "urgent", "x" * 501, admin), InvalidInput, "at most 500"),
        (lambda: service.upgrade_task(high, "critical", "r", admin), WrongState, "is running: only queued"),
        (lambda: service.cancel_task(high, admin), WrongState, "is running"),
        (lambda: service.upgrade_task(queued, "prioritize", "r", admin), None, None),  # to 8: fine
        (lambda: service.upgrade_task(queued, "prioritize", "r", admin), NotAnUpgrade, "already at priority 8"),
        (lambda: service.upgrade_task(["a"], "urgent", "r", admin), InvalidInput, "task ids are strings"),
        (lambda: service.dispatch_task("demo.nothing"), InvalidInput, "unknown task name 'demo.nothing'"),
        (lambda: service.dispatch_task("demo.echo", priority=11), InvalidInput, "from 0 to 10"),
        (lambda: service.dispatch_task("demo.echo", priority="high"), InvalidInput, "from 0 to 10"),
        (lambda: service.dispatch_task("demo.echo", category="mail"), InvalidInput, "unknown category 'mail'"),
        (lambda: service.dispatch_task("demo.echo", phase="deploy"), InvalidInput, "unknown phase 'deploy'"),
        (lambda: service.dispatch_task("demo.echo", args=[1, 2]), InvalidInput, "must be a JSON object"),
        (lambda: service.dispatch_task("demo.echo", args={"x": object()}), InvalidInput, "not JSON"),
        (lambda: service.dispatch_task("demo.echo", args={"x": "y" * 70000}), InvalidInput, "the limit is"),
        (lambda: service.dispatch_task("demo.echo", max_attempts=0), InvalidInput, "max attempts"),
    ]
    count_before = None
    for call, error_type, text in cases:
        if error_type is None:
            call()
            snapshot[queued] = task_row(runtime, queued)
            count_before = history_count(runtime)
            continue
        with pytest.raises(error_type) as raised:
            call()
        message = str(raised.value)
        assert text in message and "\n" not in message and "Traceback" not in message
    assert {i: task_row(runtime, i) for i in (queued, high)} == snapshot
    assert history_count(runtime) == count_before == 1
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 2


def test_eng012_bucket_and_phase_limited_workers(runtime, start_worker):
    service = runtime.service
    high = service.dispatch_task("demo.echo", priority=9)
    normal = service.dispatch_task("demo.echo", priority=5)
    load = service.dispatch_task("etl.load", priority=5)
    high_only, load_only = Recorder(), Recorder()
    start_worker(high_only, buckets=(Bucket.HIGH,))
    start_worker(load_only, categories=("etl",), phases=("load",))
    high_only.wait_for(lambda: high in high_only.of("succeeded"))
    load_only.wait_for(lambda: load in load_only.of("succeeded"))
    time.sleep(1.0)
    assert high_only.of("started") == [high] and load_only.of("started") == [load]
    assert task_row(runtime, normal)["status"] == "queued"
    assert depths(runtime)["subjects"] == {"tasks.webapp.default.normal": 1}


def test_eng013_same_bucket_upgrade_keeps_its_place_in_line(runtime):
    service = runtime.service
    first = service.dispatch_task("demo.echo", priority=8)
    result = service.upgrade_task(first, "critical", "even more", ROLE_USERS["admin"])
    assert (result.requeued, result.to_bucket) == (False, "high")
    row = task_row(runtime, first)
    assert (row["priority"], row["generation"]) == (10, 1)
    assert depths(runtime)["buckets"]["high"] == 1


def test_eng014_queue_statistics(runtime):
    service = runtime.service
    service.dispatch_tasks([DispatchRequest("demo.echo", priority=p) for p in (0, 1, 5, 9, 9)])
    service.dispatch_task("etl.extract", priority=9)
    broker = depths(runtime)
    assert broker["buckets"] == {"high": 3, "normal": 1, "low": 2}
    assert broker["subjects"]["tasks.etl.extract.high"] == 1
    stats = database_stats(runtime.db)
    assert stats["status"]["queued"] == 6 and stats["buckets"]["high"]["queued"] == 3
    assert stats["buckets"]["low"]["oldest_age_seconds"] >= 0
    cells = {(c["category"], c["phase"], c["bucket"]): c["queued"] for c in stats["cells"]}
    assert cells[("etl", "extract", "high")] == 1 and cells[("webapp", "default", "high")] == 2


def test_eng015_tasks_claimed_ahead_of_a_slow_one_are_handed_back_unstarted(runtime, start_worker, registry):
    """A slot claims the short tasks it holds in one transaction. When one of them turns out to
    be slow, the others must not wait behind it holding a lease: after HAND_BACK_SECONDS they
    are queued again, unstarted, their attempt not counted, so they can be cancelled or upgraded
    like any queued task, and each of the rest runs exactly once."""
    slow_started = threading.Event()

    @registry.task("test.slow", category="webapp")
    def slow(ctx, **_):
        slow_started.set()
        time.sleep(1.0)

    service = runtime.service
    recorder = Recorder()
    start_worker(recorder)
    warm_up = service.dispatch_tasks([DispatchRequest("demo.echo", priority=5) for _ in range(40)])
    recorder.wait_for(lambda: len(recorder.of("succeeded")) == len(warm_up))  # the worker knows tasks are short
    batch = service.dispatch_tasks(
        [DispatchRequest("test.slow", priority=5)] + [DispatchRequest("demo.echo", priority=5) for _ in range(10)]
    )
    slow_id, short = batch[0], batch[1:]
    recorder.wait_for(lambda: len(recorder.of("handed_back")) >= 1)
    assert slow_started.is_set() and slow_id not in recorder.of("succeeded")
    handed_back = recorder.of("handed_back")
    assert set(handed_back) <= set(short) and slow_id not in handed_back
    doomed = handed_back[-1]
    row = task_row(runtime, doomed)
    assert (row["status"], row["attempts"], row["generation"]) == ("queued", 0, 2)
    service.cancel_task(doomed, ROLE_USERS["manager"])  # queued again: cancel works as for any queued task
    recorder.wait_for(lambda: set(batch) - {doomed} <= set(recorder.of("succeeded")))
    time.sleep(0.3)
    assert doomed not in recorder.of("started")
    assert task_row(runtime, doomed)["status"] == "cancelled"
    assert recorder.counts("started") == {task: 1 for task in [*warm_up, *batch] if task != doomed}
    for task in batch:
        if task != doomed:
            assert (task_row(runtime, task)["status"], task_row(runtime, task)["attempts"]) == ("succeeded", 1)


def test_eng016_a_batch_of_claims_and_outcomes_keeps_each_rows_own_compare_and_set(runtime):
    """The statements a slot uses for many rows at once (one UPDATE ... FROM VALUES on
    PostgreSQL, one per row on SQLite) keep every row's own compare-and-set and fence: a stale
    generation or a repeated message claims nothing, a lost lease records nothing, and against a
    concurrent upgrade or cancel exactly one side wins."""
    service, db = runtime.service, runtime.db
    a, b, c = service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=2) for n in range(3)])
    lease = timedelta(seconds=30)
    message = {task: TaskMessage(task, 1, "tasks.webapp.default.low") for task in (a, b, c)}
    stale_c = TaskMessage(c, 2, "tasks.webapp.default.low")
    with db.connect(write=True) as connection:
        batch = [(message[a], 7), (message[a], 7), (message[b], 8), (stale_c, 9)]
        claimed = claim_all(connection, batch, "w1", lease, utcnow())
    assert [item is not None for item in claimed] == [True, False, True, False]
    first, second = claimed[0], claimed[2]
    assert first and second and first.lease_token != second.lease_token
    assert (task_row(runtime, a)["status"], task_row(runtime, a)["attempts"], task_row(runtime, c)["status"]) == (
        "running",
        1,
        "queued",
    )
    with db.connect(write=True) as connection:  # b's lease is lost: the reaper took it back meanwhile
        connection.execute(update(Task).where(Task.id == b).values(lease_expires_at=utcnow() - lease))
    assert reap_expired_leases(db) == (1, 0)
    ok = Outcome(True, {"ok": 1})
    finished = [Finished(item, TaskContext(item.id, 1, 1, 2, None, "w1"), ok) for item in (first, second)]
    with db.connect(write=True) as connection:
        recorded = record_outcomes(connection, runtime.settings, runtime.registry, finished, "w1", utcnow())
    assert recorded == [True, False]
    assert (task_row(runtime, a)["status"], task_row(runtime, a)["result"]) == ("succeeded", {"ok": 1})
    assert (task_row(runtime, b)["status"], task_row(runtime, b)["generation"]) == ("queued", 2)

    rounds = 60
    contested = service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=2) for n in range(rounds)])
    fillers = service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=2) for n in range(rounds)])
    for round_, (task, filler) in enumerate(zip(contested, fillers)):
        barrier = threading.Barrier(2)
        won: dict[str, bool] = {}

        def batch_claim() -> None:
            barrier.wait()
            with db.connect(write=True) as connection:
                batch = [(TaskMessage(task, 1, "x"), None), (TaskMessage(filler, 1, "x"), None)]
                won["claim"] = claim_all(connection, batch, "racer", lease, utcnow())[0] is not None

        def change() -> None:
            barrier.wait()
            try:
                if round_ % 2:
                    service.cancel_task(task, ROLE_USERS["admin"])
                else:
                    service.upgrade_task(task, "critical", "race", ROLE_USERS["admin"])
                won["other"] = True
            except (Conflict, WrongState):
                won["other"] = False

        threads = [threading.Thread(target=batch_claim), threading.Thread(target=change)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(won.values()) == [False, True], (round_, won)
        row = task_row(runtime, task)
        assert row["status"] == ("running" if won["claim"] else "cancelled" if round_ % 2 else "queued")
