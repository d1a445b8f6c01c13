"""No task's behaviour may take a worker down: whatever a task returns, raises or records, and
whatever recording it, following it up or reporting it runs into, fails that task (with one
line that says why) and the worker goes on. Real worker threads and processes, a real broker
and database; the hostile values are built inside the task (tests/support/fault_tasks.py)."""

from __future__ import annotations

import json
import signal
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.engine.worker import Worker, WorkerScope, WorkerThread
from core.errors import InvalidInput
from core.observe.snapshot import OverviewSnapshot
from core.tasks.builtin import default_registry
from core.tasks.rows import MAX_ARGS_BYTES
from db.engine import Database
from db.models import WorkerRecord
from tests.support import fault_tasks
from tests.support.harness import spawn_worker, wait_until

FINAL = ("succeeded", "failed")


@pytest.fixture
def registry():
    """The built-in tasks and the fault tasks, for the workers and the dispatching service."""
    registry = default_registry()
    fault_tasks.register(registry)
    return registry


def final(runtime, task_id: str, timeout: float = 20.0) -> dict:
    wait_until(
        lambda: runtime.service.describe_task(task_id)["status"] in FINAL, timeout=timeout, message=f"{task_id} final"
    )
    return runtime.service.describe_task(task_id)


def still_works(runtime) -> None:
    probe = runtime.service.dispatch_task("demo.echo", args={"probe": True}, priority=9)
    assert final(runtime, probe)["status"] == "succeeded"


def args_of_exactly(size: int) -> dict:
    """etl.extract arguments whose JSON is exactly `size` bytes (the limit is inclusive)."""
    args = {"source": ""}
    args["source"] = "x" * (size - len(json.dumps(args)))
    assert len(json.dumps(args)) == size
    return args


def test_hst001_a_follow_up_that_cannot_be_built_fails_its_task_not_the_worker_process(runtime, settings):
    """Arguments of exactly 64 KiB are accepted; the result is a few bytes larger, so the next
    phase cannot be dispatched. Before: `run.py worker` exited with code 2, and the task crashed
    the next worker, attempt after attempt."""
    task_id = runtime.service.dispatch_task("etl.extract", args=args_of_exactly(MAX_ARGS_BYTES), max_attempts=5)
    worker = spawn_worker(settings, log=settings.data_dir / "hst001.log")
    try:
        task = final(runtime, task_id, timeout=30)
        assert task["status"] == "failed" and task["attempts"] == 1, "failed for good: another run fails the same way"
        assert task["error"].startswith("its follow-up etl.transform could not be dispatched: task arguments are")
        assert "\n" not in task["error"]
        still_works(runtime)
        assert worker.poll() is None, "the worker process is still running"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def test_hst002_text_from_task_code_is_stored_safely(runtime, start_worker):
    """An exception message with a lone surrogate and a NUL (a non-UTF-8 file name, say) made
    SQLite raise while the error was stored, and the worker exit with code 1."""
    start_worker()
    recipe = {"kind": "raise", "value": {"codepoints": [0x66, 0xDCFF, 0, 0x6F]}}
    failed = final(runtime, runtime.service.dispatch_task("test.hostile", args={"recipe": recipe}, max_attempts=1))
    assert failed["status"] == "failed" and failed["error"].startswith("ValueError: f\N{REPLACEMENT CHARACTER}")
    long = {"kind": "raise", "value": {"codepoints": [0x61], "repeat": 100_000}}
    cut = final(runtime, runtime.service.dispatch_task("test.hostile", args={"recipe": long}, max_attempts=1))
    assert len(cut["error"]) < 4200 and "[cut: " in cut["error"]
    result = {"kind": "return", "value": {"key": {"codepoints": [0xD800]}, "leaf": {"float": "nan"}}}
    done = final(runtime, runtime.service.dispatch_task("test.hostile", args={"recipe": result}))
    assert done["status"] == "succeeded" and done["result"] == {"\N{REPLACEMENT CHARACTER}": "nan"}
    # What a person sends is refused instead, in one line: the task never exists.
    with pytest.raises(InvalidInput, match="not valid text"):
        runtime.service.dispatch_task("demo.fail", args={"message": "\ud800"})
    still_works(runtime)


def test_hst003_system_exit_and_unprintable_errors_are_the_task_s_failure(runtime, start_worker):
    start_worker(concurrency=2)
    for recipe, starts in (
        ({"kind": "raise", "exception": "SystemExit", "value": 3}, "SystemExit: 3"),
        ({"kind": "raise", "exception": "KeyboardInterrupt", "value": "stop"}, "KeyboardInterrupt: stop"),
        ({"kind": "raise_unprintable"}, "Unprintable: <unprintable Unprintable"),
        ({"kind": "return", "value": {"object": "unprintable"}}, None),
        ({"kind": "effect", "value": {"object": "set"}}, None),
    ):
        task = final(runtime, runtime.service.dispatch_task("test.hostile", args={"recipe": recipe}, max_attempts=1))
        if starts is None:
            assert task["status"] == "succeeded", task
        else:
            assert task["status"] == "failed" and task["error"].startswith(starts), task["error"]
    still_works(runtime)


# -- a generated family of hostile outcomes ---------------------------------------------------------

codepoints = st.lists(
    st.sampled_from([0, 0x7F, 0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xFFFE, 0xFFFF, 0x10FFFF, 0x41, 0x1F600])
    | st.integers(0, 0x10FFFF),
    max_size=12,
)
leaves = st.one_of(
    st.builds(lambda c, r: {"codepoints": c, "repeat": r}, codepoints, st.sampled_from([1, 1, 2, 40_000])),
    st.sampled_from([{"float": "nan"}, {"float": "inf"}, {"float": "-inf"}, {"float": "1e308"}]),
    st.sampled_from([{"object": "set"}, {"object": "bytes"}, {"object": "unprintable"}, {"object": "object"}]),
    st.builds(lambda n: {"big": n}, st.sampled_from([10, 70_000, 300_000])),
    st.builds(lambda n: {"big": n, "as": "dict"}, st.sampled_from([66_000, 300_000])),
    st.integers(-(2**70), 2**70),
    st.none(),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda n, leaf, kind: {"nested": n, "leaf": leaf, "as": kind}, st.sampled_from([2, 33, 900]),
                  children, st.sampled_from(["list", "dict"])),
        st.builds(lambda key, leaf: {"key": key, "leaf": leaf}, leaves, children),
    ),
    max_leaves=4,
)  # fmt: skip
recipes = st.builds(
    lambda kind, exception, value: {"kind": kind, "exception": exception, "value": value},
    st.sampled_from(["return", "return", "raise", "effect", "raise_unprintable"]),
    st.sampled_from(sorted(fault_tasks.EXCEPTIONS)),
    values,
)


def test_hst004_a_worker_survives_every_generated_hostile_outcome(runtime, start_worker):
    """Property-based: whatever a task returns, raises or records (text no database stores,
    non-finite numbers, nesting a thousand deep, megabytes, objects JSON cannot hold, exceptions
    that cannot be printed, SystemExit) and whatever its pipeline's next phase is handed, the
    task ends succeeded or failed and the same worker takes the next one."""
    worker = start_worker(concurrency=2)
    outcomes: dict[str, int] = {}

    @hypothesis_settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(recipe=recipes, chain=st.booleans())
    def one(recipe: dict, chain: bool) -> None:
        name = "test.hostile_chain" if chain else "test.hostile"
        task = final(runtime, runtime.service.dispatch_task(name, args={"recipe": recipe}, max_attempts=1))
        outcomes[task["status"]] = outcomes.get(task["status"], 0) + 1
        assert task["error"] is None or ("\n" not in task["error"] and len(task["error"]) < 4200)
        assert not worker._stop.is_set()

    one()
    still_works(runtime)
    print(f"\nhst004 generated outcomes: {outcomes}")
    assert outcomes.get("succeeded") and outcomes.get("failed"), outcomes


# -- a worker thread that dies anyway ------------------------------------------------------------------


class Dies:
    """An on_event hook that raises once, inside the worker's slot: an error the worker does not
    handle (a bug of ours, not a task's)."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, event: str, task_id: str) -> None:
        if event == "started" and not self.raised:
            self.raised = True
            raise RuntimeError("a bug in the worker itself")


def test_hst005_inside_serve_a_worker_that_dies_is_restarted_and_the_overview_says_so(runtime, settings, registry):
    fast = replace(settings, lease_seconds=1.0)
    db = Database(settings.resolved_database_url)
    dies = Dies()
    worker = Worker(fast, db, registry, settings.nats_url, scope=WorkerScope(), on_event=dies)
    thread = WorkerThread(worker, restart=True).start()
    try:
        task_id = runtime.service.dispatch_task("demo.echo", args={"n": 1})
        wait_until(lambda: thread.restarts == 1, timeout=20, message="a new worker took the dead one's place")
        assert final(runtime, task_id, timeout=30)["status"] == "succeeded", "its task ran after its lease ran out"
        with runtime.db.session() as session:
            dead = session.get(WorkerRecord, worker.id)
            assert dead.stopped_at is not None and "RuntimeError: a bug in the worker itself" in dead.exit_error
        died = OverviewSnapshot(runtime.db, runtime.broker).compute()["workers_died"]
        assert [w["id"] for w in died] == [worker.id] and "a bug in the worker itself" in died[0]["error"]
        still_works(runtime)
    finally:
        thread.stop()
        db.dispose()
    assert not thread.thread.is_alive()


def test_hst006_a_worker_thread_without_restart_stops_on_such_an_error(runtime, settings, registry):
    """`run.py worker` is one worker per process: it exits, and its supervisor starts it again."""
    db = Database(settings.resolved_database_url)
    thread = WorkerThread(Worker(settings, db, registry, settings.nats_url, on_event=Dies())).start()
    try:
        runtime.service.dispatch_task("demo.echo")
        thread.thread.join(timeout=20)
        assert not thread.thread.is_alive() and thread.restarts == 0
    finally:
        thread.stop()
        db.dispose()
