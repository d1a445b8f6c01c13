"""What was found when Switchyard was tried as an attacker and on a bad day in production: broker
restarts, web limits, hostile input at the edge, sessions and sign-in, escalation by dispatch.
Each test failed before its fix."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta

import nats
import pytest
from sqlalchemy import select, update
from waitress import create_server

from core.auth import tokens as api_tokens
from core.auth.users import create_user
from core.broker.embedded import NatsServer, start_embedded_broker, stop_embedded_broker
from core.engine import maintenance
from core.engine.worker import Worker, WorkerScope, WorkerThread
from core.errors import BrokerUnavailable, InvalidInput, NotFound, ReadTimedOut
from core.priority import Bucket
from core.runtime import Runtime, prepare_database
from core.tasks.rows import DispatchRequest
from dashboard.app import create_app
from dashboard.limits import ReadGate, TooMany
from db.engine import Database
from db.models import AuditLog, Task, WebSession, utcnow
from tests.support.constants import PASSWORD, ROLE_USERS, ROOT
from tests.support.forge import form_token, sign_in
from tests.support.harness import make_settings, reset_stream, run_cli, settings_env, wait_until

pytestmark = pytest.mark.timeout(240)


def fresh_database(url: str) -> None:
    db = Database(url)
    db.drop_schema()
    prepare_database(db)
    for role, username in ROLE_USERS.items():
        create_user(db, username, PASSWORD, role)
    db.dispose()


def token_for(runtime, username: str) -> str:
    return api_tokens.system_create_token(runtime.db, username, f"test-{time.monotonic_ns()}").secret


def api(app, token: str | None):
    client = app.server.test_client()
    if token:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def one_line(response) -> str:
    body = response.get_json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"], body
    return body["error"]


def stream_messages(runtime) -> int:
    """Messages in the stream; -1 while the broker cannot say (restarting)."""
    try:
        return sum(runtime.broker.run(runtime.broker.broker.subject_counts()).values())
    except BrokerUnavailable:
        return -1


# -- broker restarts ---------------------------------------------------------------------------------


def test_hrd001_a_broker_that_lost_its_store_gets_its_stream_back_and_the_tasks_republished(
    tmp_path, database_url, monkeypatch
):
    """Kill nats-server, delete its store, start it again on the same port, with 200 tasks queued.
    Before: they stayed queued, depths said "stream not found" and /readyz said ok."""
    server = NatsServer(tmp_path / "nats", sync_always=False).start()
    settings = make_settings(tmp_path, server.url, database_url, reconcile_interval_seconds=0.5)
    reset_stream(server.url, settings.stream_name)
    fresh_database(database_url)
    monkeypatch.setattr(maintenance, "RECONCILE_GRACE", timedelta(0))
    runtime = Runtime.open(settings, require_broker=True)
    app = create_app(settings, runtime)
    web = app.server.test_client()
    # A worker for the high bucket alone: it runs the maintenance loops and leaves these queued.
    worker_db = Database(database_url)
    thread = WorkerThread(
        Worker(settings, worker_db, runtime.registry, server.url, scope=WorkerScope(buckets=(Bucket.HIGH,)))
    ).start()
    try:
        ids = runtime.service.dispatch_tasks([DispatchRequest("demo.echo", priority=2)] * 200)
        wait_until(lambda: stream_messages(runtime) == 200, message="published")
        server.kill()
        shutil.rmtree(tmp_path / "nats" / "jetstream")
        server.start()
        # Every process notices on its own: the stream is back, and the database's queued tasks
        # are in it again (the reconciler, generation + 1).
        wait_until(lambda: stream_messages(runtime) == 200, timeout=40, message="republished")
        assert web.get("/readyz").status_code == 200
        with runtime.db.session() as session:
            generations = session.scalars(select(Task.generation).where(Task.id.in_(ids))).all()
        assert sorted(set(generations)) == [2]

        # A stream deleted under a connected process: /readyz is not ready while it is missing.
        async def delete_stream() -> None:
            nc = await nats.connect(server.url)
            await nc.jsm().delete_stream(settings.stream_name)
            await nc.close()

        asyncio.run(delete_stream())
        missing = web.get("/readyz")
        assert missing.status_code == 503 and missing.get_json()["broker"] == "stream missing"
        wait_until(lambda: web.get("/readyz").status_code == 200, message="ready again")
    finally:
        thread.stop()
        worker_db.dispose()
        runtime.close()
        server.stop()


def test_hrd002_the_embedded_broker_keeps_its_port_and_a_worker_process_follows_it(tmp_path, database_url):
    """Before: `serve` started the embedded broker on a new port each time, and a `run.py worker`
    started against the first one never reconnected."""
    settings = make_settings(tmp_path, None, database_url)
    fresh_database(database_url)
    first = start_embedded_broker(settings)
    port = first.port
    stop_embedded_broker(settings, first)
    second = start_embedded_broker(settings)
    assert second.port == port, "same port when it is free"
    env = settings_env(settings)
    env.pop("SWITCHYARD_NATS_URL")  # the worker finds the broker through the data folder
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "worker"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "worker.log", "wb"),
    )  # fmt: skip
    blocker = None
    try:
        runtime = Runtime.open(replace(settings, nats_url=second.url), require_broker=True)
        first_task = runtime.service.dispatch_task("demo.echo")
        wait_until(lambda: runtime.service.describe_task(first_task)["status"] == "succeeded", timeout=30)
        runtime.close()
        stop_embedded_broker(settings, second)
        blocker = socket.socket()  # the old port is taken now: the broker comes back elsewhere
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        third = start_embedded_broker(settings)
        assert third.port != port
        runtime = Runtime.open(replace(settings, nats_url=third.url), require_broker=True)
        moved_task = runtime.service.dispatch_task("demo.echo")
        wait_until(
            lambda: runtime.service.describe_task(moved_task)["status"] == "succeeded",
            timeout=40,
            message="the worker followed the broker to its new port",
        )
        runtime.close()
        assert worker.poll() is None
        stop_embedded_broker(settings, third)
    finally:
        if blocker is not None:
            blocker.close()
        worker.terminate()
        worker.wait(timeout=30)


@pytest.mark.reliability
def test_hrd003_after_any_upgrade_cancel_race_the_stream_holds_one_message_per_queued_task(runtime):
    """1,000 rounds of an upgrade to another bucket racing a cancel (or, one round in four,
    another upgrade) on the same task, either going first. Before: 35 of 150 rounds left a
    message in the stream for a cancelled task."""
    service = runtime.service
    rounds = 1000
    barrier = threading.Barrier(2)

    def race(action) -> None:
        barrier.wait()
        time.sleep(random.uniform(0, 0.004))  # either may go first
        try:
            action()
        except Exception:  # the one that loses: Conflict, WrongState, NotAnUpgrade
            pass

    for i in range(rounds):
        task_id = service.dispatch_task("demo.echo", priority=i % 8, category="report")
        upgrade = threading.Thread(target=race, args=(lambda: service.upgrade_task(task_id, "urgent", "race", "ada"),))
        if i % 4:
            other = threading.Thread(target=race, args=(lambda: service.cancel_task(task_id, "ada"),))
        else:
            other = threading.Thread(
                target=race, args=(lambda: service.upgrade_task(task_id, "critical", "race", "ada"),)
            )
        upgrade.start()
        other.start()
        upgrade.join()
        other.join()
    # Dispatch returns on commit: a message the publisher published after a cancel or an
    # upgrade won is deleted when it records it (at most RECORD_DELAY_SECONDS later).
    assert service.flush(10)
    with runtime.db.session() as session:
        statuses = session.scalars(select(Task.status)).all()
    queued, cancelled = statuses.count("queued"), statuses.count("cancelled")
    assert queued + cancelled == rounds and queued and cancelled
    assert stream_messages(runtime) == queued, f"{queued} queued, {cancelled} cancelled"


# -- web limits ----------------------------------------------------------------------------------------


def test_hrd004_a_body_larger_than_the_api_takes_is_refused_before_it_is_read(settings, runtime):
    app = create_app(settings, runtime)
    from dashboard import api

    server = create_server(app.server, host="127.0.0.1", port=0, threads=2, max_request_body_size=api.MAX_BODY_BYTES)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 629145600\r\n\r\n" + b"{" * 65536
            )
            started = time.monotonic()
            answer = sock.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer[:80]
        assert time.monotonic() - started < 5, "answered without reading 600 MiB"
    finally:
        server.close()
        thread.join(timeout=10)


def test_hrd005_deep_pages_follow_a_cursor_and_offsets_are_bounded(settings, runtime):
    runtime.service.dispatch_tasks([DispatchRequest("demo.echo", priority=i % 11) for i in range(45)])
    app = create_app(settings, runtime)
    client = api(app, token_for(runtime, "vera"))
    seen: list[str] = []
    cursor = None
    while True:
        query = "/api/v1/tasks?sort=-priority&limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query).get_json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    by_offset = [t["id"] for t in client.get("/api/v1/tasks?sort=-priority&limit=45").get_json()["tasks"]]
    assert seen == by_offset and len(seen) == 45
    too_deep = client.get("/api/v1/tasks?offset=100000")
    assert too_deep.status_code == 400 and "offset" in one_line(too_deep)
    other_sort = client.get(f"/api/v1/tasks?sort=name&cursor={page['next_cursor'] or cursor or 'x'}")
    assert other_sort.status_code in (400, 422)
    forged = client.get("/api/v1/tasks?cursor=eyJvIjpbXX0")
    assert forged.status_code == 422 and "cursor" in one_line(forged)


def test_hrd006_reads_stop_at_their_time_limit_with_a_clear_error(database_url):
    db = Database(database_url, read_timeout_seconds=0.3)
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c"
    )
    started = time.monotonic()
    with pytest.raises(ReadTimedOut, match="took longer than 0.3 s"):
        with db.reading() as session:
            session.connection().exec_driver_sql(endless).scalar()
    assert time.monotonic() - started < 5
    with db.reading() as session:  # the connection is fine afterwards
        assert session.connection().exec_driver_sql("SELECT 1").scalar() == 1
    db.dispose()


def test_hrd007_one_user_cannot_take_every_read_seat():
    gate = ReadGate(seats=3, per_user=2)
    with gate.seat("hostile"), gate.seat("hostile"):
        with pytest.raises(TooMany, match="2 of your reads are still running"):
            with gate.seat("hostile"):
                pass
        with gate.seat("ada"):  # someone else still gets a seat
            pass


def test_hrd008_refusals_without_valid_credentials_are_counted_rows_and_then_429(settings, runtime):
    app = create_app(settings, runtime)
    client = app.server.test_client()
    statuses = []
    for i in range(150):
        junk = f"swy_{i:043d}"
        statuses.append(client.get("/api/v1/me", headers={"Authorization": f"Bearer {junk}"}).status_code)
    assert statuses[:120] == [401] * 120 and set(statuses[120:]) == {429}
    throttled = client.get("/api/v1/me", headers={"Authorization": "Bearer junk"})
    assert int(throttled.headers["Retry-After"]) > 0 and "too many requests" in one_line(throttled)
    with runtime.db.session() as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.action == "api.auth")).all()
    assert len(rows) <= 2 and sum(r.count for r in rows) == 120, [(r.detail, r.count) for r in rows]


def test_hrd009_hostile_values_at_the_edge_get_one_line_4xx(settings, runtime):
    app = create_app(settings, runtime)
    client = api(app, token_for(runtime, "ada"))
    task_id = runtime.service.dispatch_task("demo.echo")
    cases = [
        ("POST", "/api/v1/tasks", b'{"name": "demo.echo", "args": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
        ("POST", "/api/v1/tasks", b'{"name": "demo.echo", "correlation_id": "\\ud800"}', 422),
        ("POST", "/api/v1/tasks", b'{"name": "demo.echo", "args": {"x": NaN}}', 400),
        ("POST", "/api/v1/tasks", b'{"name": "demo.echo", "args": {"x": Infinity}}', 400),
        ("POST", "/api/v1/tasks", b'{"name": "demo.echo", "args": ' + b'{"a":' * 33 + b"1" + b"}" * 33 + b"}", 422),
        ("POST", f"/api/v1/tasks/{task_id}/upgrade", b'{"action": "urgent", "reason": "\\ud800"}', 422),
        ("POST", f"/api/v1/tasks/{task_id}/upgrade", b'{"action": "\\ud800", "reason": "why"}', 422),
    ]
    for method, path, body, status in cases:
        response = client.open(path, method=method, data=body, content_type="application/json")
        assert response.status_code == status, (body[:60], response.status_code, response.get_data()[:200])
        one_line(response)
    with pytest.raises(InvalidInput):
        api_tokens.revoke_token(runtime.db, "ada", "²")
    with pytest.raises(NotFound):
        api_tokens.revoke_token(runtime.db, "ada", "123")
    revoked = run_cli(settings, "tokens", "revoke", "²", expect=2)
    assert revoked.stderr.count("\n") == 1
    dispatched = run_cli(settings, "dispatch", "demo.echo", "--correlation-id", "\udcff", expect=2)
    assert dispatched.stderr.startswith("error: the correlation id holds characters")
    # The history page's last possible date.
    from core.observe import history

    with pytest.raises(InvalidInput, match="before 9999-12-31"):
        history.make_filter("2025-01-01", "9999-12-31")


def test_hrd010_the_openapi_document_is_served_without_a_token(settings, runtime):
    app = create_app(settings, runtime)
    document = app.server.test_client().get("/api/v1/openapi.json")
    assert document.status_code == 200
    paths = document.get_json()["paths"]
    assert {"/api/v1/tasks", "/api/v1/tasks/{task_id}/upgrade", "/api/v1/depths", "/api/v1/me"} <= set(paths)


# -- sessions and sign-in -------------------------------------------------------------------------------


def test_hrd011_sessions_end_when_idle_or_old_and_are_pruned(settings, runtime):
    app = create_app(replace(settings, session_idle_seconds=3600, session_max_seconds=86400), runtime)
    old, idle = app.server.test_client(), app.server.test_client()
    for client in (old, idle):
        assert sign_in(client, "otto").status_code == 302
        assert client.get("/").status_code == 200
    assert old.get_cookie("session").expires is not None, "the cookie has a lifetime"
    with runtime.db.session(write=True) as session:
        rows = session.scalars(select(WebSession).order_by(WebSession.created_at)).all()
        rows[0].created_at = utcnow() - timedelta(days=2)  # past the absolute lifetime
        rows[1].last_seen_at = rows[1].created_at = utcnow() - timedelta(hours=2)  # idle past an hour
        tokens = [rows[0].id, rows[1].id]
    for client in (old, idle):
        response = client.get("/")
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    with runtime.db.session() as session:
        assert session.scalars(select(WebSession.id).where(WebSession.id.in_(tokens))).all() == [], "pruned"


def test_hrd012_a_locked_account_waits_at_most_a_minute_and_the_owner_gets_back_in(settings, runtime):
    limited = replace(settings, login_max_failures=5, login_max_failures_per_address=1000)
    app = create_app(limited, runtime)
    attacker = app.server.test_client()
    for i in range(5):
        assert sign_in(attacker, "mona", "wrong", environ_base={"REMOTE_ADDR": f"203.0.113.{i}"}).status_code == 401
    owner = app.server.test_client()
    refused = sign_in(owner, "mona", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= 5
    # Fifty more failures, the last a minute ago: the delay doubled with each, up to its cap of a
    # minute, so the owner is in again (a lockout for the window would still refuse).
    with runtime.db.session(write=True) as session:
        for i in range(50):
            session.add(AuditLog(at=utcnow(), actor="mona", action="sign_in", outcome="denied",
                                 detail="wrong user name or password", address=f"203.0.113.{i}"))  # fmt: skip
    with runtime.db.session(write=True) as session:
        session.execute(
            update(AuditLog).where(AuditLog.action == "sign_in").values(at=utcnow() - timedelta(seconds=61))
        )
    assert sign_in(owner, "mona", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 302


def test_hrd013_simultaneous_correct_sign_ins_are_all_let_in(settings, runtime):
    app = create_app(replace(settings, login_max_failures=3), runtime)
    statuses: list[int] = []

    def sign() -> None:
        client = app.server.test_client()
        token = form_token(client)
        statuses.append(
            client.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": token}).status_code
        )

    threads = [threading.Thread(target=sign) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [302] * 8


# -- escalation by dispatch ---------------------------------------------------------------------------


def test_hrd014_dispatching_high_needs_the_named_action_or_the_service_role(settings, runtime):
    create_user(runtime.db, "producer", PASSWORD, "service")
    app = create_app(settings, runtime)
    as_ = {name: api(app, token_for(runtime, name)) for name in ("otto", "mona", "ada", "producer")}
    expectations = {
        ("otto", 8): 201, ("otto", 9): 403, ("otto", 10): 403,
        ("mona", 9): 201, ("mona", 10): 403,
        ("ada", 10): 201,
        ("producer", 10): 201, ("producer", 0): 201,
    }  # fmt: skip
    for (name, priority), status in expectations.items():
        response = as_[name].post("/api/v1/tasks", json={"name": "demo.echo", "priority": priority})
        assert response.status_code == status, (name, priority, response.get_json())
    refused = as_["mona"].post("/api/v1/tasks/batch", json={"tasks": [{"name": "demo.echo", "priority": 10}]})
    assert one_line(refused) == "not allowed: manager 'mona' may not dispatch at priority 10 (Critical)"
    # The service role dispatches, and does nothing else.
    task_id = as_["ada"].post("/api/v1/tasks", json={"name": "demo.echo"}).get_json()["id"]
    for method, path, body in (
        ("GET", "/api/v1/tasks", None),
        ("GET", f"/api/v1/tasks/{task_id}", None),
        ("POST", f"/api/v1/tasks/{task_id}/upgrade", {"action": "prioritize", "reason": "r"}),
        ("POST", f"/api/v1/tasks/{task_id}/cancel", None),
        ("GET", "/api/v1/depths", None),
    ):
        assert as_["producer"].open(path, method=method, json=body).status_code == 403, path
    assert ROLE_USERS  # the four people roles are untouched
