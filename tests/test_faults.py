"""Crashes and outages: a killed worker, a broker that is down, a lost message, a stale one."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from core.broker.embedded import NatsServer
from core.broker.messages import TaskMessage
from core.runtime import Runtime
from core.tasks.service import TaskService
from db.engine import Database
from db.models import Task, TaskEffect
from tests.support.constants import ROOT
from tests.support.harness import Recorder, make_settings, settings_env, wait_until

pytestmark = pytest.mark.timeout(120)


def spawn_worker(settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "worker", *args],
        env=settings_env(settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def row(db: Database, task_id: str) -> Task:
    with db.session() as session:
        return session.get(Task, task_id)


def effects(db: Database, task_id: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(TaskEffect).where(TaskEffect.task_id == task_id))


def test_flt001_sigkilled_worker_task_runs_again_after_its_lease_and_finishes_once(runtime, settings):
    task_id = runtime.service.dispatch_task("demo.record", args={"seconds": 1.0, "value": "once"}, priority=5)
    first = spawn_worker(settings)
    try:
        wait_until(lambda: row(runtime.db, task_id).status == "running", timeout=30, message="first worker started it")
        first_worker = row(runtime.db, task_id).worker_id
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
    assert row(runtime.db, task_id).status == "running"  # orphaned, until its lease runs out
    second = spawn_worker(settings)
    try:
        wait_until(
            lambda: row(runtime.db, task_id).status == "succeeded", timeout=30, message="second worker finished it"
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    done = row(runtime.db, task_id)
    assert done.attempts == 2 and done.generation == 2 and done.worker_id != first_worker
    assert effects(runtime.db, task_id) == 1


def test_flt002_lost_lease_on_the_last_attempt_fails_the_task(runtime, settings, start_worker):
    task_id = runtime.service.dispatch_task("demo.record", args={"seconds": 30}, priority=5, max_attempts=1)
    victim = spawn_worker(settings)
    try:
        wait_until(lambda: row(runtime.db, task_id).status == "running", timeout=30, message="started")
    finally:
        victim.kill()
        victim.wait()
    start_worker(Recorder())  # its reaper notices
    wait_until(lambda: row(runtime.db, task_id).status == "failed", timeout=20, message="reaped to failed")
    assert "no attempts left (1 of 1)" in row(runtime.db, task_id).error
    assert effects(runtime.db, task_id) == 0


def test_flt003_broker_down_at_dispatch_keeps_the_task_and_publishes_it_later(tmp_path, database_url, start_worker):
    server = NatsServer(tmp_path / "own-nats", sync_always=False).start()
    settings = make_settings(tmp_path, server.url, database_url)
    runtime = Runtime.open(settings, require_broker=True)
    db = runtime.db
    try:
        server.stop()
        # The service's broker connection is now down: dispatch must not lose the task.
        task_id = runtime.service.dispatch_task("demo.record", args={"value": "survivor"}, priority=9)
        assert runtime.service.last_publish_error and "broker unavailable" in runtime.service.last_publish_error
        assert row(db, task_id).publish_due_at is not None and row(db, task_id).status == "queued"
        # The command line says so in one line and still exits 0 with the id.
        cli = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), "dispatch", "demo.echo", "--priority", "3"],
            env=_cli_env(settings),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        cli_task = cli.stdout.strip()
        assert len(cli.stderr.strip().splitlines()) == 1 and "kept" not in cli.stdout
        assert "will be published when the broker is back" in cli.stderr and "Traceback" not in cli.stderr
        server.start()
        recorder = Recorder()
        start_worker(recorder, worker_settings=settings)
        recorder.wait_for(lambda: {task_id, cli_task} <= set(recorder.of("succeeded")), timeout=30)
        assert effects(db, task_id) == 1
        assert row(db, task_id).publish_due_at is None and row(db, task_id).published_generation == 1
    finally:
        runtime.close()
        server.stop()


def _cli_env(settings) -> dict[str, str]:
    env = settings_env(settings)
    env["SWITCHYARD_BROKER_TIMEOUT_SECONDS"] = "1"
    return env


def test_flt004_reconciler_requeues_a_task_whose_message_the_broker_lost(runtime, start_worker, settings):
    task_id = runtime.service.dispatch_task("demo.record", args={"value": "lost"}, priority=5)
    assert runtime.service.flush(10)  # dispatch returns on commit; the publisher publishes after
    lost = row(runtime.db, task_id)
    assert runtime.broker.run(runtime.broker.broker.delete_message(lost.stream_seq))  # the broker "loses" it
    with runtime.db.session(write=True) as session:  # and it was queued long enough ago to be suspicious
        from datetime import timedelta

        session.get(Task, task_id).queued_at = lost.queued_at - timedelta(minutes=5)
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: task_id in recorder.of("succeeded"), timeout=30)
    done = row(runtime.db, task_id)
    assert done.generation == 2 and effects(runtime.db, task_id) == 1


def test_flt005_relay_publishes_rows_committed_but_never_published(settings, registry, start_worker):
    db = Database(settings.resolved_database_url)
    try:
        offline = TaskService(settings, db, registry, broker=None)  # as if it crashed before publishing
        task_id = offline.dispatch_task("demo.record", args={"value": "relayed"}, priority=5)
        assert row(db, task_id).publish_due_at is not None
        recorder = Recorder()
        start_worker(recorder)
        recorder.wait_for(lambda: task_id in recorder.of("succeeded"), timeout=30)
        assert effects(db, task_id) == 1
    finally:
        db.dispose()


def test_flt006_stale_and_duplicate_messages_are_dropped_unrun(runtime, start_worker):
    service = runtime.service
    task_id = service.dispatch_task("demo.record", args={"value": "x"}, priority=1)
    service.upgrade_task(task_id, "prioritize", "stale test", "ada")
    broker = runtime.broker
    # The old generation again, as if its delete had failed: the duplicate window swallows a
    # republish under its own message id, so it is written raw, without one.
    stale = TaskMessage(task_id, 1, "tasks.report.default.low")
    assert broker.run(broker.broker.publish([stale]))[0].stream_seq < row(runtime.db, task_id).stream_seq
    broker.run(broker.broker.js.publish(stale.subject, stale.encode()))
    # The current generation once more: deduplicated by the stream, same sequence back.
    current = TaskMessage(task_id, 2, "tasks.report.default.high")
    assert broker.run(broker.broker.publish([current]))[0].stream_seq == row(runtime.db, task_id).stream_seq
    recorder = Recorder()
    start_worker(recorder)
    recorder.wait_for(lambda: task_id in recorder.of("succeeded") and len(recorder.of("dropped")) >= 1, timeout=30)
    assert recorder.counts("started")[task_id] == 1 and effects(runtime.db, task_id) == 1


def test_flt007_worker_survives_a_broker_restart(tmp_path, database_url, start_worker):
    server = NatsServer(tmp_path / "restart-nats", sync_always=True).start()
    settings = make_settings(tmp_path, server.url, database_url)
    runtime = Runtime.open(settings, require_broker=True)
    try:
        recorder = Recorder()
        start_worker(recorder, worker_settings=settings)
        before = runtime.service.dispatch_task("demo.record", args={"value": 1}, priority=5)
        recorder.wait_for(lambda: before in recorder.of("succeeded"), timeout=30)
        server.kill()
        server.start()
        wait_until(lambda: runtime.broker.broker.connected, timeout=20, message="service reconnected")
        after = runtime.service.dispatch_task("demo.record", args={"value": 2}, priority=5)
        recorder.wait_for(lambda: after in recorder.of("succeeded"), timeout=30)
        assert effects(runtime.db, after) == 1
    finally:
        runtime.close()
        server.stop()
