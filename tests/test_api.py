"""The HTTP API (docs/api.md) and API tokens, over real HTTP.

A real WSGI server (waitress, as `run.py serve` uses) on a free port, a real nats-server, real
SQLite and PostgreSQL; requests are made with the standard library's http.client, as a producer
written in any language would make them. The end-to-end test starts `python run.py serve` itself
and drives it with urllib and curl.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import nats
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from waitress import create_server

from core.auth import tokens as api_tokens
from core.auth import user_admin
from core.auth.tokens import LAST_USED_RESOLUTION, hash_token
from core.broker.embedded import NatsServer, free_port
from core.errors import InvalidInput, NotAllowed, NotFound, WrongState
from core.runtime import Runtime
from dashboard.app import create_app
from db.engine import Database
from db.models import ApiToken, AuditLog, RolePermission, Task, TaskStatus
from db.queries.task_list import TaskFilters, list_tasks
from tests.support import harness
from tests.support.constants import PASSWORD, ROLE_USERS, ROOT
from tests.support.harness import Recorder, TcpProxy, make_settings, settings_env, spawn_worker, wait_until

pytestmark = pytest.mark.timeout(240)

ROLES = ("viewer", "operator", "manager", "admin")
EVERYONE = set(ROLES)
# The roles table (docs/architecture.md, "Roles and permissions") written out per endpoint.
ALLOWED = {
    "me": EVERYONE,
    "list": EVERYONE,
    "get": EVERYONE,
    "depths": EVERYONE,
    "dispatch": {"operator", "manager", "admin"},
    "batch": {"operator", "manager", "admin"},
    "prioritize": {"operator", "manager", "admin"},
    "urgent": {"manager", "admin"},
    "critical": {"admin"},
    "cancel": {"manager", "admin"},
    "retry": {"operator", "manager", "admin"},
}


# -- a plain HTTP client -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.text[:200])
        return json.loads(self.text)

    @property
    def error(self) -> str:
        body = self.json
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        assert body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"], body
        return body["error"]


class Http:
    """http.client, one connection per request: nothing a shell script or a Go service lacks."""

    def __init__(self, base_url: str, token: str | None = None):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.token = token

    def as_(self, token: str | None) -> "Http":
        return Http(f"http://{self.host}:{self.port}", token)

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None, headers=None) -> Reply:
        send = {} if headers is None else dict(headers)
        if self.token is not None and "Authorization" not in send:
            send["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None and "Content-Type" not in send:
            send["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=data, headers=send)
            response = connection.getresponse()
            text = response.read().decode()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
        finally:
            connection.close()

    def get(self, path, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw) -> Reply:
        return self.request("POST", path, body, **kw)


def serve_app(app) -> tuple[str, callable]:
    server = create_server(app.server, host="127.0.0.1", port=0, threads=4)

    def run() -> None:
        try:
            server.run()
        except OSError:  # close() from this other thread ends waitress's select loop this way
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop() -> None:
        server.close()
        thread.join(timeout=10)

    return f"http://127.0.0.1:{server.effective_port}", stop


@pytest.fixture
def base_url(settings, runtime):
    url, stop = serve_app(create_app(settings, runtime))
    yield url
    stop()


@pytest.fixture
def tokens(runtime) -> dict[str, str]:
    """role -> a fresh API token of that role's user."""
    return {role: api_tokens.system_create_token(runtime.db, ROLE_USERS[role], "tests").secret for role in ROLES}


@pytest.fixture
def client(base_url, tokens) -> Http:
    return Http(base_url, tokens["admin"])


def audit_rows(db, **where) -> list[AuditLog]:
    with db.session() as session:
        query = select(AuditLog).order_by(AuditLog.id)
        for key, value in where.items():
            query = query.where(getattr(AuditLog, key) == value)
        return list(session.scalars(query))


def task_state(runtime, task_id) -> tuple:
    with runtime.db.session() as session:
        task = session.get(Task, task_id)
        return task.status, task.priority, task.bucket, task.generation


def queued(runtime, priority=2, **options) -> str:
    """A queued task no test worker takes (category report: the failing worker only runs webapp)."""
    return runtime.service.dispatch_task("demo.echo", priority=priority, category="report", **options)


def failed_task(runtime, start_worker) -> str:
    task_id = runtime.service.dispatch_task("demo.fail", max_attempts=1)
    recorder = Recorder()
    start_worker(recorder, categories=("webapp",))
    recorder.wait_for(lambda: task_id in recorder.of("failed"))
    wait_until(lambda: task_state(runtime, task_id)[0] == TaskStatus.FAILED, message="failed")
    return task_id


# -- permissions -----------------------------------------------------------------------------------


def test_api001_role_permissions_table_holds_dispatch_tasks(runtime):
    with runtime.db.session() as session:
        holders = set(session.scalars(select(RolePermission.role).where(RolePermission.permission == "dispatch_tasks")))
    assert holders == {"operator", "manager", "admin", "service"}  # service: producers (issue 10)


@pytest.mark.parametrize("role", ROLES)
def test_api002_role_by_endpoint_permission_matrix(runtime, start_worker, base_url, tokens, role):
    user = ROLE_USERS[role]
    http = Http(base_url, tokens[role])
    targets = {action: queued(runtime) for action in ("prioritize", "urgent", "critical", "cancel")}
    targets["retry"] = failed_task(runtime, start_worker)
    before = {action: task_state(runtime, task_id) for action, task_id in targets.items()}
    some_task = targets["cancel"]

    replies = {
        "me": http.get("/api/v1/me"),
        "list": http.get("/api/v1/tasks"),
        "get": http.get(f"/api/v1/tasks/{some_task}"),
        "depths": http.get("/api/v1/depths"),
        "dispatch": http.post("/api/v1/tasks", {"name": "demo.echo", "category": "report"}),
        "batch": http.post("/api/v1/tasks/batch", {"tasks": [{"name": "demo.echo", "category": "report"}] * 2}),
    }
    for action in ("prioritize", "urgent", "critical"):
        replies[action] = http.post(
            f"/api/v1/tasks/{targets[action]}/upgrade", {"action": action, "reason": f"{role} says so"}
        )
    replies["cancel"] = http.post(f"/api/v1/tasks/{targets['cancel']}/cancel")
    replies["retry"] = http.post(f"/api/v1/tasks/{targets['retry']}/retry")

    for endpoint, reply in replies.items():
        allowed = role in ALLOWED[endpoint]
        if not allowed:
            assert reply.status == 403, (endpoint, reply.status, reply.text)
            assert reply.error.startswith(f"not allowed: {role} {user!r} may not"), reply.text
            continue
        assert reply.status in (200, 201), (endpoint, reply.status, reply.text)
        assert set(reply.json) != {"error"}

    assert replies["me"].json["username"] == user and replies["me"].json["role"] == role
    for action in ("prioritize", "urgent", "critical", "cancel", "retry"):
        task_id = targets[action]
        rows = [(r.actor, r.outcome, r.address) for r in audit_rows(runtime.db, action=action, target=task_id)]
        if role in ALLOWED[action]:
            assert rows == [(user, "ok", "127.0.0.1")], (action, rows)
            assert replies[action].json["id"] == task_id
        else:
            assert rows == [(user, "denied", "127.0.0.1")], (action, rows)
            assert task_state(runtime, task_id) == before[action], action
    dispatches = audit_rows(runtime.db, action="dispatch")
    if role in ALLOWED["dispatch"]:
        created = [replies["dispatch"].json["id"], *replies["batch"].json["ids"]]
        assert [(r.actor, r.outcome) for r in dispatches] == [(user, "ok")] * 2
        assert dispatches[0].target == created[0] and dispatches[1].target == f"{created[1]}..{created[2]}"
        with runtime.db.session() as session:
            assert set(session.scalars(select(Task.created_by).where(Task.id.in_(created)))) == {user}
        assert replies["dispatch"].headers["location"] == f"/api/v1/tasks/{created[0]}"
    else:
        assert [(r.actor, r.outcome, r.address) for r in dispatches] == [(user, "denied", "127.0.0.1")] * 2
        with runtime.db.session() as session:
            assert session.scalar(select(Task.id).where(Task.name == "demo.echo", Task.created_by == user)) is None


# -- tokens ----------------------------------------------------------------------------------------


def test_api003_token_lifecycle_create_use_last_used_revoke(runtime, base_url):
    db = runtime.db
    created = api_tokens.create_token(db, "otto", "otto", " nightly-etl ", address="10.1.1.1")
    secret, info = created.secret, created.info
    assert api_tokens.TOKEN_PATTERN.match(secret) and info.prefix == secret[:12] and info.name == "nightly-etl"
    with db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.prefix == info.prefix))
        stored = [str(getattr(row, column.key)) for column in ApiToken.__table__.columns]
    assert row.token_hash == hash_token(secret) and not any(secret in value for value in stored)
    assert row.last_used_at is None and row.created_by == "otto"

    http = Http(base_url, secret)
    assert http.get("/api/v1/me").json["username"] == "otto"
    [listed] = api_tokens.list_tokens(db, "otto")
    first_use = listed.last_used_at
    assert first_use is not None and listed.active
    assert http.get("/api/v1/me").status == 200
    assert api_tokens.list_tokens(db, "otto")[0].last_used_at == first_use  # written at most once a minute
    with db.session(write=True) as session:
        session.execute(update(ApiToken).values(last_used_at=first_use - LAST_USED_RESOLUTION * 2))
    assert http.get("/api/v1/me").status == 200
    assert api_tokens.list_tokens(db, "otto")[0].last_used_at > first_use

    revoked = api_tokens.revoke_token(db, "otto", info.prefix, address="10.1.1.1")
    assert revoked.revoked_by == "otto" and not revoked.active
    reply = http.get("/api/v1/me")
    assert reply.status == 401 and reply.error == "invalid or revoked API token"
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]
    with pytest.raises(WrongState, match="already revoked"):
        api_tokens.revoke_token(db, "otto", info.id)

    assert [(r.actor, r.target, r.outcome, r.address) for r in audit_rows(db, action="token.create")] == [
        ("otto", "otto", "ok", "10.1.1.1")
    ]
    revokes = audit_rows(db, action="token.revoke")
    assert [(r.actor, r.target, r.outcome) for r in revokes] == [
        ("otto", "otto", "ok"),
        ("otto", str(info.id), "refused"),
    ]
    assert info.prefix in revokes[0].detail
    [auth] = audit_rows(db, action="api.auth")
    assert (auth.actor, auth.target, auth.outcome, auth.detail, auth.address) == (
        "otto",
        info.prefix,
        "denied",
        f"revoked API token {info.prefix}",
        "127.0.0.1",
    )
    assert all(secret not in (r.detail or "") for r in audit_rows(db))


def test_api004_own_tokens_for_everyone_anyone_s_for_admins_only(runtime):
    db = runtime.db
    mine = api_tokens.create_token(db, "vera", "vera", "laptop")  # a viewer may hold a token
    with pytest.raises(NotAllowed, match="viewer 'vera' may not manage other users' API tokens"):
        api_tokens.create_token(db, "vera", "otto", "sneaky", address="10.2.2.2")
    others = api_tokens.create_token(db, "ada", "otto", "for otto")
    assert others.info.username == "otto" and others.info.created_by == "ada"
    with pytest.raises(NotAllowed):
        api_tokens.revoke_token(db, "vera", others.info.id)
    with pytest.raises(NotAllowed):
        api_tokens.list_tokens(db, "vera", "otto")
    with pytest.raises(NotAllowed):
        api_tokens.list_tokens(db, "vera", "*")
    assert [t.name for t in api_tokens.list_tokens(db, "vera")] == ["laptop"]
    assert {t.username for t in api_tokens.list_tokens(db, "ada", "*")} == {"vera", "otto"}
    assert api_tokens.revoke_token(db, "ada", mine.info.prefix).revoked_by == "ada"
    with pytest.raises(NotAllowed, match="does not exist or is disabled"):
        api_tokens.create_token(db, "ghost", "ghost", "x")
    with pytest.raises(NotFound, match="no user named 'ghost'"):
        api_tokens.create_token(db, "ada", "ghost", "x")
    for bad in ("", "   ", "x" * 65, "tab\there", None):
        with pytest.raises(InvalidInput):
            api_tokens.create_token(db, "ada", "ada", bad)
    with pytest.raises(NotFound):
        api_tokens.revoke_token(db, "ada", "swy_nothere")
    with pytest.raises(InvalidInput):
        api_tokens.revoke_token(db, "ada", {"id": 1})
    denied = audit_rows(db, outcome="denied")
    assert [(r.actor, r.action, r.target) for r in denied] == [
        ("vera", "token.create", "otto"),
        ("vera", "token.revoke", "otto"),
        ("vera", "token.list", "otto"),
        ("vera", "token.list", "*"),
        ("ghost", "token.create", "ghost"),
    ]
    assert denied[0].address == "10.2.2.2"
    refused = [(r.action, r.outcome) for r in audit_rows(db, outcome="refused")]
    assert ("token.create", "refused") in refused and ("token.revoke", "refused") in refused


def test_api005_disabled_user_and_role_change_apply_to_tokens_at_once(runtime, base_url, tokens):
    otto = Http(base_url, tokens["operator"])
    assert otto.post("/api/v1/tasks", {"name": "demo.echo", "category": "report"}).status == 201
    user_admin.change_role(runtime.db, "ada", "otto", "viewer")
    reply = otto.post("/api/v1/tasks", {"name": "demo.echo", "category": "report"})
    assert reply.status == 403 and "viewer 'otto' may not dispatch tasks" in reply.error
    user_admin.set_active(runtime.db, "ada", "otto", False)
    reply = otto.get("/api/v1/tasks")
    assert reply.status == 401 and reply.error == "invalid or revoked API token"
    [auth] = audit_rows(runtime.db, action="api.auth")
    assert auth.actor == "otto" and "disabled user 'otto'" in auth.detail
    with pytest.raises(WrongState, match="disabled"):
        api_tokens.system_create_token(runtime.db, "otto", "new")
    user_admin.set_active(runtime.db, "ada", "otto", True)  # tokens not revoked work again
    assert otto.get("/api/v1/tasks").status == 200


def test_api006_every_bad_token_is_401_and_audited(runtime, base_url, tokens):
    http = Http(base_url)
    cases = {
        "missing": {},
        "basic": {"Authorization": "Basic b3R0bzpwYXNzd29yZA=="},
        "empty bearer": {"Authorization": "Bearer "},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "unknown": {"Authorization": "Bearer swy_" + "A" * 43},
        "session cookie only": {"Cookie": "session=whatever; _csrf_token=x"},
    }
    for name, headers in cases.items():
        for method, path in (("GET", "/api/v1/tasks"), ("POST", "/api/v1/tasks"), ("GET", "/api/v1/nowhere")):
            reply = http.request(method, path, {"name": "demo.echo"} if method == "POST" else None, headers=headers)
            assert reply.status == 401, (name, method, path, reply.text)
            assert reply.error in ("invalid or revoked API token", api_tokens.MISSING_TOKEN), name
            assert reply.headers["www-authenticate"].startswith("Bearer")
            assert "set-cookie" not in reply.headers
    # Issue 10: the same refusal from one address within a minute is one row, counted.
    counts = {r.detail: r.count for r in audit_rows(runtime.db, action="api.auth")}
    assert counts == {"malformed API token": 6, "unknown API token": 3}
    with runtime.db.session() as session:
        assert session.scalar(select(Task.id)) is None


def test_api007_signed_in_session_cookie_does_not_open_the_api(settings, runtime, base_url):
    import requests

    browser = requests.Session()
    form = browser.get(f"{base_url}/login").text
    csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
    assert browser.post(f"{base_url}/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf}).ok
    assert browser.get(f"{base_url}/tasks").status_code == 200
    reply = browser.post(f"{base_url}/api/v1/tasks", json={"name": "demo.echo"})
    assert reply.status_code == 401 and reply.json() == {"error": api_tokens.MISSING_TOKEN}


# -- bad input ---------------------------------------------------------------------------------


def test_api008_every_4xx_is_one_json_line_and_changes_nothing(runtime, start_worker, client):
    waiting = queued(runtime, priority=9)
    done = failed_task(runtime, start_worker)
    runtime.service.cancel_task(cancelled := queued(runtime), "ada")
    before = {t: task_state(runtime, t) for t in (waiting, done, cancelled)}
    big = b'{"name": "demo.echo", "args": {"x": "' + b"x" * (4 * 1024 * 1024) + b'"}}'
    cases = [
        # (method, path, body or raw bytes, status, text in the error)
        ("POST", "/api/v1/tasks", b"{not json", 400, "the body is not JSON"),
        ("POST", "/api/v1/tasks", b"", 400, "send a JSON object"),
        ("POST", "/api/v1/tasks", b"[1, 2]", 400, "must be a JSON object"),
        ("POST", "/api/v1/tasks", b"\xff\xfe", 400, "not JSON"),
        ("POST", "/api/v1/tasks", big, 413, "larger than"),
        ("POST", "/api/v1/tasks", {"name": "demo.missing"}, 422, "unknown task name 'demo.missing'"),
        ("POST", "/api/v1/tasks", {}, 422, 'a task needs a "name"'),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "priority": 11}, 422, "from 0 to 10"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "priority": "5"}, 422, "whole number from 0 to 10"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "priority": True}, 422, "whole number"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "priorty": 3}, 422, "unknown field 'priorty'"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "args": [1]}, 422, "must be a JSON object"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "category": "mail"}, 422, "unknown category 'mail'"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "phase": "deploy"}, 422, "unknown phase 'deploy'"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "max_attempts": 0}, 422, "from 1 to 100"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "correlation_id": "c" * 65}, 422, "1-64 characters"),
        ("POST", "/api/v1/tasks", {"name": "demo.echo", "correlation_id": 7}, 422, "must be a string"),
        ("POST", "/api/v1/tasks/batch", {"tasks": []}, 422, "dispatch 1 to 1000 tasks"),
        ("POST", "/api/v1/tasks/batch", {"tasks": [{"name": "demo.echo"}] * 1001}, 422, "not 1001"),
        ("POST", "/api/v1/tasks/batch", {"tasks": {"name": "demo.echo"}}, 422, 'a batch is {"tasks"'),
        ("POST", "/api/v1/tasks/batch", {"task": []}, 422, "unknown field 'task'"),
        (
            "POST",
            "/api/v1/tasks/batch",
            {"tasks": [{"name": "demo.echo"}, {"name": "demo.echo", "priority": 12}]},
            422,
            "task 1: priority must be a whole number from 0 to 10",
        ),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", {"action": "maximum", "reason": "r"}, 422, "unknown action"),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", {"action": 10, "reason": "r"}, 422, "unknown action"),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", {"action": "critical"}, 422, "an upgrade needs a reason"),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", {"action": "critical", "reason": " "}, 422, "needs a reason"),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", {"action": "critical", "reason": "r" * 501}, 422, "at most 500"),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", {"action": "critical", "why": "x"}, 422, "unknown field 'why'"),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", b"", 400, "send a JSON object"),
        ("POST", f"/api/v1/tasks/{waiting}/upgrade", {"action": "urgent", "reason": "r"}, 409, "already at priority 9"),
        ("POST", f"/api/v1/tasks/{done}/upgrade", {"action": "critical", "reason": "r"}, 409, "is failed"),
        ("POST", f"/api/v1/tasks/{cancelled}/cancel", None, 409, "only queued tasks can be cancelled"),
        ("POST", f"/api/v1/tasks/{waiting}/retry", None, 409, "only failed tasks can be retried"),
        ("GET", "/api/v1/tasks/feedfacefeedface", None, 404, "no task with id 'feedfacefeedface'"),
        ("POST", "/api/v1/tasks/feedface/upgrade", {"action": "critical", "reason": "r"}, 404, "no task with id"),
        ("POST", "/api/v1/tasks/feedface/cancel", None, 404, "no task with id"),
        ("POST", "/api/v1/tasks/feedface/retry", None, 404, "no task with id"),
        ("GET", "/api/v1/tasks/" + "f" * 65, None, 422, "task ids are strings of 1-64 characters"),
        ("GET", "/api/v1/nowhere", None, 404, "no API endpoint /api/v1/nowhere"),
        ("GET", "/api/v2/tasks", None, 404, "no API endpoint"),
        ("GET", f"/api/v1/tasks/{waiting}/cancel", None, 405, "GET is not allowed here: use POST"),
        ("DELETE", f"/api/v1/tasks/{waiting}", None, 405, "use GET"),
        ("PUT", "/api/v1/tasks", {"name": "demo.echo"}, 405, "use GET, POST"),
        ("GET", "/api/v1/tasks?status=bogus", None, 400, "unknown status 'bogus'"),
        ("GET", "/api/v1/tasks?bucket=urgent", None, 400, "unknown bucket 'urgent'"),
        ("GET", "/api/v1/tasks?category=mail", None, 400, "unknown category 'mail'"),
        ("GET", "/api/v1/tasks?phase=deploy", None, 400, "unknown phase 'deploy'"),
        ("GET", "/api/v1/tasks?limit=0", None, 400, "limit must be a whole number from 1 to 500"),
        ("GET", "/api/v1/tasks?limit=501", None, 400, "from 1 to 500"),
        ("GET", "/api/v1/tasks?offset=-1", None, 400, "offset must be"),
        ("GET", "/api/v1/tasks?offset=ten", None, 400, "offset must be"),
        ("GET", "/api/v1/tasks?sort=attempts", None, 400, "cannot sort by 'attempts'"),
        ("GET", "/api/v1/tasks?sort=priority:sideways", None, 400, "cannot sort by"),
        ("GET", "/api/v1/tasks?sort=name,-name", None, 400, "twice"),
        ("GET", "/api/v1/tasks?q=" + "x" * 65, None, 400, "at most 64 characters"),
        ("GET", "/api/v1/tasks?state=queued", None, 400, "unknown query parameter 'state'"),
    ]
    for method, path, body, status, text in cases:
        if isinstance(body, bytes):
            reply = client.request(method, path, raw=body)
        else:
            reply = client.request(method, path, body)
        assert reply.status == status, (method, path[:80], reply.status, reply.text[:300])
        assert text in reply.error, (method, path[:80], reply.error)
        if status == 405:
            assert reply.headers["allow"]
    assert {t: task_state(runtime, t) for t in before} == before
    with runtime.db.session() as session:
        assert session.scalar(select(Task.id).where(Task.name == "demo.echo", Task.created_by == "ada")) is None
    refused = {(r.action, r.target) for r in audit_rows(runtime.db, outcome="refused")}
    assert ("urgent", waiting) in refused and ("cancel", cancelled) in refused and ("retry", waiting) in refused
    assert ("dispatch", None) in refused


# -- reading, dispatching, acting --------------------------------------------------------------------


def test_api009_dispatch_read_back_upgrade_cancel_retry(runtime, start_worker, client):
    reply = client.post(
        "/api/v1/tasks",
        {"name": "demo.echo", "priority": 2, "args": {"to": "ops"}, "correlation_id": "run-7", "category": "report"},
    )
    assert reply.status == 201
    task = reply.json
    task_id = task["id"]
    assert (task["status"], task["priority"], task["bucket"], task["created_by"], task["publish_pending"]) == (
        "queued",
        2,
        "low",
        "ada",
        False,
    )
    assert client.get(reply.headers["location"]).json == task
    upgraded = client.post(f"/api/v1/tasks/{task_id}/upgrade", {"action": "urgent", "reason": "SLA breach"})
    assert upgraded.status == 200
    assert (upgraded.json["priority"], upgraded.json["bucket"], upgraded.json["generation"]) == (9, "high", 2)
    [history] = client.get(f"/api/v1/tasks/{task_id}").json["priority_history"]
    assert (history["from_priority"], history["to_priority"], history["action"], history["reason"]) == (
        2,
        9,
        "urgent",
        "SLA breach",
    )
    assert history["changed_by"] == "ada"
    depths = client.get("/api/v1/depths").json
    assert depths["buckets"]["high"] == 1 and depths["subjects"] == {"tasks.report.default.high": 1}
    assert depths["database"]["status"]["queued"] == 1
    cancelled = client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert cancelled.status == 200 and cancelled.json["status"] == "cancelled"
    assert client.get("/api/v1/depths").json["buckets"]["high"] == 0

    failing = failed_task(runtime, start_worker)
    retried = client.post(f"/api/v1/tasks/{failing}/retry")
    assert retried.status == 200 and retried.json["id"] == failing and retried.json["generation"] == 2
    assert [r.outcome for r in audit_rows(runtime.db, action="retry", target=failing)] == ["ok"]

    batch = client.post(
        "/api/v1/tasks/batch",
        {"tasks": [{"name": "etl.extract", "priority": 8}, {"name": "demo.record", "args": {"value": 1}}]},
    )
    assert batch.status == 201 and batch.json["publish_pending"] is False
    first, second = (client.get(f"/api/v1/tasks/{i}").json for i in batch.json["ids"])
    assert (first["name"], first["bucket"]) == ("etl.extract", "high")
    assert (second["name"], second["args"]) == ("demo.record", {"value": 1})


def test_api010_list_has_the_console_s_filters_sorts_and_paging(runtime, client):
    for i in range(24):
        runtime.service.dispatch_task(
            ("etl.extract", "etl.load", "demo.echo", "demo.record")[i % 4],
            priority=i % 11,
            correlation_id=f"corr-{i % 3}",
        )
    with runtime.db.session(write=True) as session:
        ids = list(session.scalars(select(Task.id).order_by(Task.id)))
        for i, task_id in enumerate(ids):
            status = (TaskStatus.QUEUED, TaskStatus.FAILED, TaskStatus.SUCCEEDED)[i % 3]
            session.execute(update(Task).where(Task.id == task_id).values(status=status))

    def direct(filters=TaskFilters(), sort=(), start=0, end=100):
        with runtime.db.session() as session:
            rows, total = list_tasks(session, filters, sort, start, end)
        return [r["id"] for r in rows], total

    cases = [
        ("", TaskFilters(), ()),
        ("status=queued&status=failed", TaskFilters(statuses=("failed", "queued")), ()),
        ("status=queued,failed&bucket=high", TaskFilters(statuses=("failed", "queued"), buckets=("high",)), ()),
        ("category=etl&phase=load", TaskFilters(categories=("etl",), phases=("load",)), ()),
        ("q=corr-1", TaskFilters(text="corr-1"), ()),
        ("q=etl.", TaskFilters(text="etl."), ()),
        (f"q={ids[5][:12]}", TaskFilters(text=ids[5][:12]), ()),
        ("sort=priority:desc,created:asc", TaskFilters(), (("priority", "desc"), ("created", "asc"))),
        ("sort=-name&status=succeeded", TaskFilters(statuses=("succeeded",)), (("name", "desc"),)),
        ("sort=status,id", TaskFilters(), (("status", "asc"), ("id", "asc"))),
    ]
    for query, filters, sort in cases:
        reply = client.get(f"/api/v1/tasks?{query}")
        assert reply.status == 200, (query, reply.text)
        expected_ids, expected_total = direct(filters, sort)
        body = reply.json
        assert [t["id"] for t in body["tasks"]] == expected_ids, query
        assert body["total"] == expected_total and body["next_offset"] is None, query
    row = client.get(f"/api/v1/tasks?q={ids[0]}").json["tasks"][0]
    assert set(row) == {
        "id",
        "name",
        "category",
        "phase",
        "priority",
        "priority_label",
        "bucket",
        "status",
        "attempts",
        "max_attempts",
        "correlation_id",
        "created_at",
        "queued_at",
    }

    pages, offset = [], 0
    while offset is not None:
        body = client.get(f"/api/v1/tasks?sort=priority&limit=5&offset={offset}").json
        assert body["limit"] == 5 and body["offset"] == offset and body["total"] == 24
        pages.append([t["id"] for t in body["tasks"]])
        offset = body["next_offset"]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 4]
    assert sum(pages, []) == direct(sort=(("priority", "asc"),))[0]


def test_api011_broker_down_dispatch_is_kept_depths_is_503(settings, tmp_path):
    server = NatsServer(tmp_path / "own-nats", sync_always=False).start()
    own = make_settings(tmp_path, server.url, settings.database_url)
    runtime = Runtime.open(own, require_broker=True)
    url, stop = serve_app(create_app(own, runtime))
    try:
        http = Http(url, api_tokens.system_create_token(runtime.db, "otto", "t").secret)
        assert http.get("/api/v1/depths").status == 200
        server.kill()
        reply = http.get("/api/v1/depths")
        assert reply.status == 503 and reply.error.startswith("broker unavailable"), reply.text
        kept = http.post("/api/v1/tasks", {"name": "demo.echo"})
        assert kept.status == 201 and kept.json["publish_pending"] is True
        assert http.get(f"/api/v1/tasks/{kept.json['id']}").json["status"] == "queued"
    finally:
        stop()
        runtime.close()
        server.stop()


def test_api012_database_down_is_503(settings, database_url, tmp_path, nats_server):
    if database_url.startswith("sqlite"):
        # SQLite is "down" for writers while another process holds its write lock.
        proxy, url = None, f"{database_url}?timeout=0.3"
    else:
        target = make_url(database_url)
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432).up()
        url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    down = make_settings(tmp_path, nats_server.url, url)
    runtime = Runtime.open(down, require_broker=True)
    base, stop = serve_app(create_app(down, runtime))
    locker = None
    try:
        http = Http(base, api_tokens.system_create_token(runtime.db, "ada", "t").secret)
        assert http.get("/api/v1/me").status == 200  # last_used_at is fresh: the next check only reads
        if proxy is None:
            locker = sqlite3.connect(make_url(database_url).database, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
        else:
            proxy.down()
        replies = [
            http.post("/api/v1/tasks", {"name": "demo.echo"}),
            http.post("/api/v1/tasks/batch", {"tasks": [{"name": "demo.echo"}]}),
        ]
        if proxy is not None:
            replies += [http.get("/api/v1/tasks"), http.get("/api/v1/me")]
        for reply in replies:
            assert reply.status == 503 and reply.error.startswith("database unavailable"), reply.text
    finally:
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
        if proxy is not None:
            proxy.down()
        stop()
        runtime.close()
    check = Database(settings.resolved_database_url)
    with check.session() as session:
        assert session.scalar(select(Task.id)) is None
    check.dispose()


# -- the console page -------------------------------------------------------------------------------


def sign_in(flask_client, username):
    page = flask_client.get("/login").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = flask_client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 302


def find_callback(flask_client, input_id, prop):
    for dep in flask_client.get("/_dash-dependencies").get_json():
        if any(i["id"] == input_id and i["property"] == prop for i in dep["inputs"]):
            return dep
    raise AssertionError(f"no callback on {input_id}.{prop}")


def call(flask_client, dep, inputs: dict, state: dict | None = None, changed: list | None = None):
    parts = dep["output"].strip(".").split("...")
    body = {
        "output": dep["output"],
        "outputs": [dict(zip(("id", "property"), p.rsplit(".", 1))) for p in parts],
        "inputs": [dict(i, value=inputs.get((i["id"], i["property"]))) for i in dep["inputs"]],
        "state": [dict(s, value=(state or {}).get((s["id"], s["property"]))) for s in dep["state"]],
        "changedPropIds": [f"{k[0]}.{k[1]}" for k in (changed or inputs)],
    }
    token = flask_client.get_cookie("_csrf_token").value
    return flask_client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})


def click(flask_client, button, name=None, owner=None, target=None):
    """A click on `button`, or (None) a re-render that fires the callback without one."""
    dep = find_callback(flask_client, "create-token", "n_clicks")
    inputs = {("create-token", "n_clicks"): None, ("revoke-confirm", "n_clicks"): None}
    if button:
        inputs[(button, "n_clicks")] = 1
    state = {("token-name", "value"): name, ("token-owner", "value"): owner, ("token-target", "value"): target}
    return call(flask_client, dep, inputs, state, changed=[(button or "create-token", "n_clicks")])


def test_api013_tokens_page_each_user_their_own_admins_anyone(settings, runtime):
    app = create_app(settings, runtime)
    otto = app.server.test_client()
    sign_in(otto, "otto")
    route = find_callback(otto, "url", "pathname")
    page = call(otto, route, {("url", "pathname"): "/tokens"}).get_data(as_text=True)
    assert "Your tokens" in page and "No tokens yet." in page and "nav-tokens" in page

    created = click(otto, "create-token", name="ci")
    assert created.status_code == 200
    words = json.dumps(created.get_json()).replace('"', " ").split()
    [secret] = [word for word in words if api_tokens.TOKEN_PATTERN.match(word)]
    assert api_tokens.authenticate_token(runtime.db, secret).username == "otto"
    [mine] = api_tokens.list_tokens(runtime.db, "otto")
    assert mine.created_by == "otto"

    # Forged: a hidden owner field set to another user, and another user's token id.
    admins = api_tokens.system_create_token(runtime.db, "ada", "admin's")
    forged = click(otto, "create-token", name="evil", owner="ada").get_data(as_text=True)
    assert "may not manage other users' API tokens" in forged
    forged = click(otto, "revoke-confirm", target=str(admins.info.id)).get_data(as_text=True)
    assert "may not manage other users' API tokens" in forged
    assert api_tokens.authenticate_token(runtime.db, admins.secret).username == "ada"
    assert [(r.actor, r.action) for r in audit_rows(runtime.db, outcome="denied")] == [
        ("otto", "token.create"),
        ("otto", "token.revoke"),
    ]
    # A re-render fires the callback with no click: nothing happens.
    assert click(otto, None).status_code == 204

    ada = app.server.test_client()
    sign_in(ada, "ada")
    page = call(ada, route, {("url", "pathname"): "/tokens"}).get_data(as_text=True)
    assert "All tokens" in page and mine.prefix in page and admins.info.prefix in page
    for_otto = click(ada, "create-token", name="deploy", owner="otto").get_data(as_text=True)
    assert "Created token 'deploy' for otto" in for_otto
    revoked = click(ada, "revoke-confirm", target=str(mine.id)).get_data(as_text=True)
    assert f"Revoked {mine.prefix}" in revoked
    with pytest.raises(NotAllowed):
        api_tokens.authenticate_token(runtime.db, secret)
    refreshed = call(ada, find_callback(ada, "tokens-refresh", "data"), {("tokens-refresh", "data"): 3})
    assert "revoked" in refreshed.get_data(as_text=True)


# -- the command line ---------------------------------------------------------------------------------


def run_cli(settings, *args, expect=0):
    result = harness.run_cli(settings, *args, expect=expect)
    if expect:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and result.stdout == "", result.stderr
    return result


def test_api014_tokens_on_the_command_line(settings, runtime):
    secret = run_cli(settings, "tokens", "create", "mona", "--name", "reports").stdout.strip()
    assert api_tokens.TOKEN_PATTERN.match(secret)
    assert api_tokens.authenticate_token(runtime.db, secret).username == "mona"
    [listed] = json.loads(run_cli(settings, "tokens", "list", "mona").stdout)
    assert listed["name"] == "reports" and listed["prefix"] == secret[:12] and listed["active"] is True
    assert listed["last_used_at"] is not None and secret not in json.dumps(listed)
    assert "revoked" in run_cli(settings, "tokens", "revoke", secret[:12]).stdout
    assert json.loads(run_cli(settings, "tokens", "list", "mona").stdout)[0]["active"] is False
    for args, code, text in [
        (("tokens", "create", "ghost", "--name", "x"), 3, "no user named 'ghost'"),
        (("tokens", "create", "mona"), 2, "the following arguments are required: --name"),
        (("tokens", "create", "mona", "--name", " "), 2, "a token needs a name"),
        (("tokens", "revoke", secret[:12]), 5, "already revoked"),
        (("tokens", "revoke", "swy_nothere"), 3, "no API token 'swy_nothere'"),
        (("tokens", "revoke", "whatever"), 2, "by its id or its prefix"),
        (("tokens", "list", "ghost"), 3, "no user named 'ghost'"),
        (("tokens",), 2, "use: python run.py tokens create"),
    ]:
        assert text in run_cli(settings, *args, expect=code).stderr, args
    actions = [
        (r.actor, r.action, r.target) for r in audit_rows(runtime.db, outcome="ok") if r.action.startswith("token.")
    ]
    assert actions == [("cli", "token.create", "mona"), ("cli", "token.revoke", "mona")]


# -- producers outside Python -----------------------------------------------------------------------


class ServeProcess:
    def __init__(self, settings, port: int):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port)],
            env=settings_env(settings),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.5):
                    return
            except queue.Empty:
                if self.process.poll() is not None:
                    break
        raise AssertionError(f"serve never said {text!r}: {''.join(self.output)[-2000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def curl(*args: str) -> tuple[int, dict]:
    result = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


def test_api015_plain_http_clients_drive_a_real_serve_process(settings, runtime, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    producer = run_cli(settings, "tokens", "create", "otto", "--name", "producer").stdout.strip()
    manager = run_cli(settings, "tokens", "create", "mona", "--name", "on-call").stdout.strip()
    serve = ServeProcess(settings, port)
    worker = None
    try:
        serve.wait_for(f"Switchyard console: {base}/")

        # Dispatch with urllib, exactly the JSON a producer in any language sends.
        request = Request(
            f"{base}/api/v1/tasks",
            data=json.dumps({"name": "demo.echo", "priority": 1, "args": {"from": "urllib"}}).encode(),
            headers={"Authorization": f"Bearer {producer}", "Content-Type": "application/json"},
            method="POST",
        )
        with urlopen(request, timeout=30) as response:
            assert response.status == 201
            created = json.loads(response.read())
        task_id = created["id"]
        assert (created["status"], created["bucket"], created["created_by"]) == ("queued", "low", "otto")

        # Read it back with http.client.
        reply = Http(base, producer).get(f"/api/v1/tasks/{task_id}")
        assert reply.status == 200 and reply.json["args"] == {"from": "urllib"}

        # Upgrade with curl (if the machine has it) or http.client.
        upgrade = {"action": "urgent", "reason": "customer waiting"}
        if shutil.which("curl"):
            status, body = curl(
                "-X",
                "POST",
                "-H",
                f"Authorization: Bearer {manager}",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(upgrade),
                f"{base}/api/v1/tasks/{task_id}/upgrade",
            )
            denied, refusal = curl(
                "-X",
                "POST",
                "-H",
                f"Authorization: Bearer {producer}",
                "-d",
                json.dumps(upgrade),
                f"{base}/api/v1/tasks/{task_id}/upgrade",
            )
            assert denied == 403 and refusal == {"error": "not allowed: operator 'otto' may not make tasks urgent"}
        else:
            reply = Http(base, manager).post(f"/api/v1/tasks/{task_id}/upgrade", upgrade)
            status, body = reply.status, reply.json
        assert status == 200 and (body["priority"], body["bucket"]) == (9, "high")

        # A worker started now runs it.
        worker = spawn_worker(settings, log=tmp_path / "worker.log")
        wait_until(
            lambda: Http(base, producer).get(f"/api/v1/tasks/{task_id}").json["status"] == "succeeded",
            timeout=60,
            interval=0.2,
            message="the worker ran the API's task",
        )
        done = Http(base, producer).get(f"/api/v1/tasks/{task_id}").json
        assert done["result"] == {"from": "urllib"} and done["priority_history"][0]["changed_by"] == "mona"

        run_cli(settings, "tokens", "revoke", producer[:12])
        reply = Http(base, producer).get(f"/api/v1/tasks/{task_id}")
        assert reply.status == 401 and reply.json == {"error": "invalid or revoked API token"}
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        assert serve.stop() == 0
    assert "Traceback" not in "".join(serve.output)


def test_api016_a_bare_nats_message_without_a_row_is_dropped_unrun(settings, runtime, start_worker):
    """What docs/api.md tells producers: publishing to the stream yourself does not make a task."""
    recorder = Recorder()
    start_worker(recorder)
    ghost = "f" * 32

    async def publish() -> None:
        nc = await nats.connect(settings.nats_url)
        try:
            body = json.dumps({"task_id": ghost, "generation": 1}).encode()
            await nc.jetstream().publish("tasks.webapp.default.high", body, headers={"Nats-Msg-Id": f"{ghost}:1"})
            await nc.publish("switchyard.doorbell", b"tasks.webapp.default.high")
        finally:
            await nc.close()

    asyncio.run(publish())
    recorder.wait_for(lambda: ghost in recorder.of("dropped"))
    assert ghost not in recorder.of("started")
    with runtime.db.session() as session:
        assert session.get(Task, ghost) is None
