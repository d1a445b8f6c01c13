"""Security, part 1: every Dash callback as a forged HTTP request, for every role.

Requests are built from the app's own /_dash-dependencies, so a callback added later is covered
or makes sec001 fail until it is. Roles: anonymous (a fresh session with a valid form token),
viewer, operator, manager, admin, and a disabled user (an admin signed in, then disabled). Every
request is judged on the database (every table, audit_log apart) and the stream before and after
it; every refusal must leave exactly one `denied` audit row (actions) and no application data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import pytest
from sqlalchemy import select, update

from core.auth import user_admin
from core.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from core.auth.users import create_user
from dashboard.app import create_app
from dashboard.components import task_actions
from db.models import PriorityHistory, Task, TaskStatus, User, utcnow
from tests.support.constants import PASSWORD, ROLE_USERS
from tests.support.forge import (
    Callback,
    callbacks,
    changed_tables,
    clientside,
    form_token,
    has_traceback,
    new_audit_rows,
    one_line_error,
    post,
    sign_in,
    snapshot,
)

ROLES = ("anonymous", "viewer", "operator", "manager", "admin", "disabled")
NAMES = {**ROLE_USERS, "disabled": "dora", "anonymous": None}
ADDRESSES = {role: f"198.51.100.{i + 10}" for i, role in enumerate(ROLES)}
SENTINEL = "sentinel-7f3a"  # in task arguments, a correlation id, a reason and a user name


def holds(role: str, permission: Permission | None) -> bool:
    if role in ("anonymous", "disabled"):
        return False
    return permission is None or permission in ROLE_PERMISSIONS[Role(role)]


class Console:
    """The app, one signed-in client per role, and helpers to make things to act on."""

    def __init__(self, settings, runtime):
        self.settings, self.runtime, self.db = settings, runtime, runtime.db
        self.app = create_app(settings, runtime)
        create_user(self.db, "dora", PASSWORD, "admin")
        create_user(self.db, f"{SENTINEL}.user", PASSWORD, "viewer")
        self.clients = {}
        for role in ROLES:
            client = self.app.server.test_client()
            client.environ_base["REMOTE_ADDR"] = ADDRESSES[role]
            if role == "anonymous":
                client.anonymous_token = form_token(client)  # a session and a valid form token, no sign-in
            else:
                assert sign_in(client, NAMES[role]).status_code == 302
            self.clients[role] = client
        user_admin.set_active(self.db, "ada", "dora", False)
        self.callbacks = {cb.name: cb for cb in callbacks(self.app, self.clients["admin"])}
        self.counter = 0
        self.sentinel_task = runtime.service.dispatch_task(
            "demo.echo", args={"note": SENTINEL}, priority=1, correlation_id=f"{SENTINEL}-corr"
        )
        runtime.service.upgrade_task(self.sentinel_task, "prioritize", f"{SENTINEL} reason", "ada")

    def post(self, role: str, body, **kwargs):
        client = self.clients[role]
        if role == "anonymous":
            kwargs.setdefault("token", client.anonymous_token)
        return post(client, body, **kwargs)

    def next(self) -> int:
        self.counter += 1
        return self.counter

    def queued_task(self, priority: int = 0) -> str:
        return self.runtime.service.dispatch_task("demo.echo", args={"n": self.next()}, priority=priority)

    def failed_task(self) -> str:
        task_id = self.queued_task(3)
        with self.db.session(write=True) as session:
            session.execute(
                update(Task).where(Task.id == task_id).values(status=TaskStatus.FAILED, publish_due_at=None)
            )
        return task_id

    def task(self, task_id: str) -> Task:
        with self.db.session() as session:
            return session.get(Task, task_id)

    def user(self, name: str) -> User | None:
        with self.db.session() as session:
            return session.scalar(select(User).where(User.username == name))

    def victim(self) -> str:
        name = f"victim{self.next()}"
        create_user(self.db, name, PASSWORD, "viewer")
        return name


@pytest.fixture
def console(settings, runtime):
    return Console(settings, runtime)


# -- the action callbacks and what each role may do with them ------------------------------------


@dataclass
class Op:
    """One thing a forged request to an action callback can ask for.

    prepare(console, role) -> (request values, effect): effect(console, response) says whether an
    allowed request did what it asked. `audit` is the (action, target) of the denial row a
    signed-in role without `permission` leaves (a callable of the values' task or user)."""

    label: str
    permission: Permission | None  # None: any signed-in user (their own things)
    prepare: Callable
    audit: Callable | None = None


def _grid_click(action):
    def prepare(c: Console, role):
        task_id = c.failed_task() if action == "retry" else c.queued_task(0)
        value = {"value": {"action": action, "task_id": task_id, "nonce": c.next()}, "colId": "actions"}
        return {("tasks-grid", "cellRendererData"): value}, _effect(action, task_id), task_id

    return prepare


def _detail_click(action):
    def prepare(c: Console, role):
        task_id = c.failed_task() if action == "retry" else c.queued_task(0)
        pattern = c.callbacks["task_detail.button_action"].dependency["inputs"][0]["id"]
        button = {"type": "task-action", "action": action, "task": task_id}
        return {(pattern, "n_clicks"): [(button, 1)]}, _effect(action, task_id), task_id

    return prepare


def _effect(action, task_id):
    def effect(c: Console, response) -> bool:
        # A click only opens the confirmation dialog with a pending token for this user.
        row = c.task(task_id)
        pending = response.get_json()["response"]["task-action-pending"]["data"]
        unchanged = row.generation == 1 and row.priority in (0, 3)
        return isinstance(pending, str) and unchanged

    return effect


def _confirm(action, issued_to=None):
    def prepare(c: Console, role):
        task_id = c.failed_task() if action == "retry" else c.queued_task(0)
        owner = issued_to or NAMES[role] or "nobody"
        token = task_actions.signer(c.app.server.secret_key).dumps({"user": owner, "task": task_id, "action": action})
        values = {
            ("reason-confirm", "n_clicks"): 1,
            ("task-action-pending", "data"): token,
            ("reason-input", "value"): "forged confirmation",
        }

        def effect(c: Console, response) -> bool:
            row = c.task(task_id)
            if action == "cancel":
                return row.status == TaskStatus.CANCELLED
            if action == "retry":
                return row.status == TaskStatus.QUEUED and row.generation == 2
            with c.db.session() as session:
                history = session.scalars(select(PriorityHistory).where(PriorityHistory.task_id == task_id)).all()
            target = {"prioritize": 8, "urgent": 9, "critical": 10}[action]
            return row.priority == target and len(history) == 1

        return values, effect, task_id

    return prepare


def _users(button):
    def prepare(c: Console, role):
        victim = c.victim()
        values = {(button, "n_clicks"): 1}
        if button == "create-user":
            victim = f"new{c.next()}"
            values[("new-username", "value")] = victim
            values[("new-password", "value")] = PASSWORD
            values[("new-role", "value")] = "operator"
        elif button == "change-role":
            values.update({("target-user", "value"): victim, ("target-role", "value"): "manager"})
        elif button == "toggle-active":  # on a disabled user it enables at once; disabling asks first
            user_admin.set_active(c.db, "ada", victim, False)
            values[("target-user", "value")] = victim
            values[("users-data", "data")] = [{"username": victim, "role": "viewer", "active": False}]
        elif button == "disable-confirm":
            values[("target-user", "value")] = victim
            values[("users-data", "data")] = [{"username": victim, "role": "viewer", "active": True}]
        else:
            values.update({("target-user", "value"): victim, ("reset-password-input", "value"): "a new password 1"})
        before = c.user(victim)

        def effect(c: Console, response) -> bool:
            after = c.user(victim)
            if button == "create-user":
                return after is not None and after.role == "operator"
            if button == "change-role":
                return after.role == "manager" and after.session_version == before.session_version + 1
            if button == "toggle-active":
                return after.active is True
            if button == "disable-confirm":
                return after.active is False
            return after.password_hash != before.password_hash

        return values, effect, victim

    return prepare


def _tokens(kind):
    def prepare(c: Console, role):
        from core.auth import tokens as api_tokens
        from db.models import ApiToken

        victim = c.victim()
        values = {}
        if kind == "create":
            values = {("create-token", "n_clicks"): 1, ("token-name", "value"): "forged",
                      ("token-owner", "value"): victim}  # fmt: skip
        else:
            made = api_tokens.system_create_token(c.db, victim, "theirs")
            token_id = made.info.id
            values = {("revoke-confirm", "n_clicks"): 1, ("token-target", "value"): str(token_id)}

        def effect(c: Console, response) -> bool:
            with c.db.session() as session:
                owner = session.scalar(select(User.id).where(User.username == victim))
                rows = session.scalars(select(ApiToken).where(ApiToken.user_id == owner)).all()
            if kind == "create":
                return len(rows) == 1
            return len(rows) == 1 and rows[0].revoked_at is not None

        return values, effect, victim

    return prepare


def _asks(button, values_for):
    """A click that only opens a confirmation dialog: allowed, it opens it and changes nothing."""

    def prepare(c: Console, role):
        values, subject = values_for(c)
        values[(button, "n_clicks")] = 1

        def effect(c: Console, response) -> bool:
            outputs = response.get_json()["response"]
            return any(v.get("is_open") is True for v in outputs.values())

        return values, effect, subject

    return prepare


def _disable_values(c: Console):
    victim = c.victim()
    return {("target-user", "value"): victim,
            ("users-data", "data"): [{"username": victim, "role": "viewer", "active": True}]}, victim  # fmt: skip


def _revoke_values(c: Console):
    from core.auth import tokens as api_tokens

    victim = c.victim()
    made = api_tokens.system_create_token(c.db, victim, "theirs")
    option = {"label": f"{made.info.prefix}… theirs", "value": str(made.info.id)}
    return {("token-target", "value"): str(made.info.id), ("token-target", "options"): [option]}, victim


def _account(kind):
    def prepare(c: Console, role):
        name = NAMES[role]
        before = c.user(name) if name else None
        if kind == "zone":
            values = {("account-zone-save", "n_clicks"): 1, ("account-zone", "value"): "browser",
                      ("account-browser-zone", "data"): "Europe/Paris"}  # fmt: skip
        elif kind == "password":
            values = {("account-password-form", "n_submit"): 1, ("account-current", "value"): PASSWORD,
                      ("account-new", "value"): PASSWORD, ("account-repeat", "value"): PASSWORD}  # fmt: skip
        else:
            values = {("account-sign-out-others", "n_clicks"): 1}

        def effect(c: Console, response) -> bool:
            after = c.user(name)
            if kind == "zone":
                return after.time_zone == "Europe/Paris"
            if kind == "password":
                return after.password_hash != before.password_hash
            return "other session" in response.get_data(as_text=True)

        return values, effect, name

    return prepare


def _csv(c: Console, role):
    values = {("history-download", "n_clicks"): 1}

    def effect(c: Console, response) -> bool:
        return SENTINEL in response.get_data(as_text=True)

    return values, effect, None


TASK_OPS = {
    "cancel": Permission.CANCEL_TASKS,
    "retry": Permission.PRIORITIZE_TASKS,
    "prioritize": Permission.PRIORITIZE_TASKS,
    "urgent": Permission.URGENT_TASKS,
    "critical": Permission.CRITICAL_TASKS,
}

SCENARIOS: dict[str, list[Op]] = {
    "tasks.grid_action": [Op(a, p, _grid_click(a), lambda a, s: (a, s)) for a, p in TASK_OPS.items()],
    "task_detail.button_action": [Op(a, p, _detail_click(a), lambda a, s: (a, s)) for a, p in TASK_OPS.items()],
    "tasks.reason_dialog": [
        Op("prioritize", Permission.PRIORITIZE_TASKS, _confirm("prioritize"), lambda a, s: (a, s)),
        Op("urgent", Permission.URGENT_TASKS, _confirm("urgent"), lambda a, s: (a, s)),
        Op("critical", Permission.CRITICAL_TASKS, _confirm("critical"), lambda a, s: (a, s)),
        # An admin's confirmation replayed from every other session (for the admin it is their own).
        Op("critical", Permission.CRITICAL_TASKS, _confirm("critical", issued_to="ada"), lambda a, s: (a, s)),
        Op("cancel", Permission.CANCEL_TASKS, _confirm("cancel"), lambda a, s: (a, s)),
        Op("retry", Permission.PRIORITIZE_TASKS, _confirm("retry"), lambda a, s: (a, s)),
    ],
    "users.act": [
        Op(b, Permission.MANAGE_USERS, _users(b), lambda a, s: ("callback", "users.act"))
        for b in ("create-user", "change-role", "toggle-active", "disable-confirm", "reset-password")
    ],
    "users.confirm_disable": [
        Op(
            "ask",
            Permission.MANAGE_USERS,
            _asks("toggle-active", _disable_values),
            lambda a, s: ("callback", "users.confirm_disable"),
        ),
    ],
    "tokens.act": [
        Op("token.create", Permission.MANAGE_USERS, _tokens("create"), lambda a, s: (a, s)),
        Op("token.revoke", Permission.MANAGE_USERS, _tokens("revoke"), lambda a, s: (a, s)),
    ],
    "tokens.confirm_revoke": [
        Op("ask", Permission.VIEW_DASHBOARD, _asks("revoke-token", _revoke_values), None),
    ],
    # Every signed-in user, for their own account only: nobody else's can be named.
    "account.act": [Op(kind, None, _account(kind), None) for kind in ("zone", "password", "others")],
    "history.download": [Op("export", Permission.VIEW_HISTORY, _csv, lambda a, s: ("callback", "history.download"))],
}

# Callbacks that only read, with inputs that make each return its data.
SAMPLES: dict[str, Callable] = {
    "app.route": lambda c: {("url", "pathname"): "/"},
    "overview.refresh": lambda c: {("overview-tick", "n_intervals"): 1},
    "tasks.get_rows": lambda c: {("tasks-grid", "getRowsRequest"): {"startRow": 0, "endRow": 100, "sortModel": []}},
    "task_detail.refresh": lambda c: {("task-action-done", "data"): 1, ("task-detail-id", "data"): c.sentinel_task},
    "history.refresh": lambda c: {},
    "users.refresh": lambda c: {("users-refresh", "data"): 1},
    "users.selected": lambda c: {
        ("target-user", "value"): "vera",
        ("users-data", "data"): [{"username": "vera", "role": "viewer", "active": True}],
    },
    "tokens.refresh": lambda c: {("tokens-refresh", "data"): 1},
    "tasks.live": lambda c: {
        ("tasks-tick", "n_intervals"): 1,
        ("tasks-anchor", "data"): "2000-01-01T00:00:00+00:00",
    },  # fmt: skip
    "task_detail.live": lambda c: {
        ("task-detail-tick", "n_intervals"): 1,
        ("task-detail-id", "data"): c.sentinel_task,
        ("task-detail-seen", "data"): "x",
    },  # fmt: skip
    "account.refresh": lambda c: {("account-refresh", "data"): 1},
}
# What a reader may see in each read callback's answer (proves the request reached the data).
SHOWS_SENTINEL = {"tasks.get_rows", "task_detail.refresh", "task_detail.live", "history.refresh", "users.refresh"}


def test_sec001_every_callback_has_a_policy_and_a_security_scenario(console):
    found = console.callbacks
    assert "" not in found, "a server callback without a policy"
    assert len(found) >= 12
    for name, cb in found.items():
        if cb.action:
            assert name in SCENARIOS, f"{name} is fired by a click: add its forged requests to SCENARIOS"
        else:
            assert name in SAMPLES, f"{name}: add sample inputs to SAMPLES"
            assert name not in SCENARIOS, f"{name} is listed as an action but has no click input"
    # A callback registered outside a page's block never reaches Dash: create_app refuses it.
    from dashboard.guard import seal

    app = console.app
    app.callback_map["stray.children"] = {"callback": lambda *a, **k: None}
    with pytest.raises(RuntimeError, match="outside"):
        seal(app)
    del app.callback_map["stray.children"]
    # Clientside callbacks run in the browser: a request naming one is refused.
    for dependency in clientside(console.clients["admin"]):
        response = console.post("admin", Callback(dependency).body())
        assert response.status_code == 400 and one_line_error(response)


def test_sec002_action_callbacks_refuse_every_role_without_the_permission(console, capsys):
    runtime = console.runtime
    tally = {"requests": 0, "allowed": 0, "refused": 0}
    for name, cb in sorted(console.callbacks.items()):
        if not cb.action:
            continue
        for op in SCENARIOS[name]:
            for role in ROLES:
                values, effect, subject = op.prepare(console, role)
                before = snapshot(runtime)
                started = utcnow()
                response = console.post(role, cb.body(values))
                after = snapshot(runtime)
                text = response.get_data(as_text=True)
                where = f"{name} {op.label} as {role}"
                tally["requests"] += 1
                assert response.status_code < 500 and not has_traceback(response), where
                if holds(role, op.permission) and holds(role, cb.permission):
                    tally["allowed"] += 1
                    assert response.status_code == 200, (where, text[:300])
                    assert effect(console, response), where
                    continue
                tally["refused"] += 1
                assert changed_tables(before, after) == [], where
                rows = new_audit_rows(runtime, before)
                assert len(rows) == 1, (where, [(r.actor, r.action, r.outcome) for r in rows])
                row = rows[0]
                assert (row.outcome, row.actor, row.address) == ("denied", NAMES[role], ADDRESSES[role]), where
                assert started <= row.at <= utcnow(), where
                if role in ("anonymous", "disabled"):
                    assert response.status_code == 401 and one_line_error(response), where
                    assert (row.action, row.target) == ("callback", name), where
                    if role == "disabled":
                        assert "disabled" in row.detail, where
                else:
                    assert response.status_code in (200, 403), where
                    assert "not allowed" in text.lower(), where
                    assert (row.action, row.target) == op.audit(op.label, subject), where
                assert SENTINEL not in text, where
    print(f"\nsec002 action callbacks: {tally}")
    assert tally["refused"] > tally["allowed"] > 0


def test_sec003_read_callbacks_answer_only_roles_with_the_page_permission(console):
    runtime = console.runtime
    tally = {"requests": 0, "answered": 0, "refused": 0}
    for name, cb in sorted(console.callbacks.items()):
        if cb.action:
            continue
        body = cb.body(SAMPLES[name](console))
        for role in ROLES:
            before = snapshot(runtime)
            response = console.post(role, body)
            after = snapshot(runtime)
            text = response.get_data(as_text=True)
            where = f"{name} as {role}"
            tally["requests"] += 1
            assert response.status_code < 500 and not has_traceback(response), where
            assert changed_tables(before, after) == [], where
            rows = new_audit_rows(runtime, before)
            if holds(role, cb.permission):
                tally["answered"] += 1
                assert response.status_code == 200, (where, text[:300])
                assert rows == [], where
                if name in SHOWS_SENTINEL:
                    assert SENTINEL in text, where
                continue
            tally["refused"] += 1
            assert one_line_error(response) and SENTINEL not in text, where
            if role in ("anonymous", "disabled"):
                # A refused refresh is only answered: a tab left open after sign-out polls.
                assert response.status_code == 401 and rows == [], where
            else:
                assert response.status_code == 403, where
                assert [(r.actor, r.action, r.target, r.outcome) for r in rows] == [
                    (NAMES[role], "callback", name, "denied")
                ], where
    print(f"\nsec003 read callbacks: {tally}")
    assert tally["refused"] > 0 and tally["answered"] > 0


PAGES = {"/": Permission.VIEW_DASHBOARD, "/tasks": Permission.VIEW_TASKS, "/history": Permission.VIEW_HISTORY,
         "/users": Permission.MANAGE_USERS}  # fmt: skip


def test_sec004_pages_open_only_for_roles_with_their_permission(console):
    route = console.callbacks["app.route"]
    pages = dict(PAGES, **{f"/tasks/{console.sentinel_task}": Permission.VIEW_TASKS})
    for path, permission in pages.items():
        for role in ROLES:
            before = snapshot(console.runtime)
            response = console.post(role, route.body({("url", "pathname"): path}))
            text = response.get_data(as_text=True)
            rows = new_audit_rows(console.runtime, before)
            where = f"{path} as {role}"
            if role in ("anonymous", "disabled"):
                assert response.status_code == 401 and one_line_error(response), where
            elif holds(role, permission):
                assert response.status_code == 200 and "Not allowed" not in text and rows == [], where
            else:
                assert response.status_code == 200 and "Not allowed" in text, where
                assert [(r.actor, r.action, r.target, r.outcome) for r in rows] == [
                    (NAMES[role], "view", path, "denied")
                ], where
                assert SENTINEL not in text, where


def _concrete(rule) -> str:
    path = rule.rule
    for argument in rule.arguments:
        path = path.replace(f"<path:{argument}>", "x").replace(f"<string:{argument}>", "x")
        path = path.replace(f"<{argument}>", "x")
    return path


def test_sec005_anonymous_requests_to_every_route_get_no_application_data(console):
    client = console.app.server.test_client()
    client.get("/login")
    server = console.app.server
    paths = {_concrete(rule): rule for rule in server.url_map.iter_rules()}
    extra = [
        "/_dash-layout",
        "/_dash-dependencies",
        "/tasks",
        "/users",
        f"/tasks/{console.sentinel_task}",
        "/_reload-hash",
        "/_mcp",
        "/_dash-component-suites/dash/no-such-file.js",
        "/_dash-component-suites/dash/../../../../etc/passwd",
        "/assets/../../etc/passwd",
    ]
    paths.update(dict.fromkeys(extra))
    checked = 0
    for path in sorted(paths):
        for method in ("GET", "POST"):
            response = client.open(path, method=method, json={"output": "page.children"})
            text = response.get_data(as_text=True).replace(path, "")  # a redirect names what was asked
            checked += 1
            where = f"{method} {path}: {response.status_code}"
            assert response.status_code < 500 and not has_traceback(response), where
            assert SENTINEL not in text and console.sentinel_task not in text, where
            public = path.startswith(("/login", "/assets/", "/_dash-component-suites/", "/healthz", "/readyz",
                                      "/metrics", "/api/"))  # fmt: skip
            if not public and response.status_code < 400:
                assert response.status_code == 302 and response.headers["Location"].startswith("/login"), where
    assert checked >= 40


def test_sec006_a_tab_left_open_after_sign_out_polls_without_filling_the_audit_log(console):
    client = console.clients["viewer"]
    captured = client.get_cookie("session").value
    token = client.get_cookie("_csrf_token").value
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = console.app.server.test_client()
    replay.environ_base["REMOTE_ADDR"] = "203.0.113.99"
    replay.set_cookie("session", captured)
    overview = console.callbacks["overview.refresh"]
    before = snapshot(console.runtime)
    for tick in range(10):
        for tab in (client, replay):
            response = post(tab, overview.body({("overview-tick", "n_intervals"): tick}), token=token)
            assert response.status_code == 401 and one_line_error(response)
    assert new_audit_rows(console.runtime, before) == []
    # ... while a click with the captured cookie is one denied row naming whose session it was.
    grid = console.callbacks["tasks.grid_action"]
    task_id = console.queued_task()
    click = {("tasks-grid", "cellRendererData"): {"value": {"action": "cancel", "task_id": task_id, "nonce": 1}}}
    before = snapshot(console.runtime)
    response = post(replay, grid.body(click), token=token)
    rows = new_audit_rows(console.runtime, before)
    assert response.status_code == 401 and one_line_error(response)
    assert [(r.actor, r.action, r.target, r.outcome, r.address) for r in rows] == [
        ("vera", "callback", "tasks.grid_action", "denied", "203.0.113.99")
    ]
    assert "signed out" in rows[0].detail
    assert changed_tables(before, snapshot(console.runtime)) == []


def test_sec007_debug_and_mcp_stay_off_whatever_the_environment_says(settings, runtime, monkeypatch):
    for name in ("DASH_DEBUG", "DASH_UI", "DASH_PROPS_CHECK", "DASH_HOT_RELOAD", "DASH_PRUNE_ERRORS",
                 "DASH_SERVE_DEV_BUNDLES", "DASH_MCP_ENABLED"):  # fmt: skip
        monkeypatch.setenv(name, "true")
    monkeypatch.setenv("DASH_MCP_PATH", "_mcp")
    app = create_app(settings, runtime)
    assert app.server.debug is False and app.server.config["PROPAGATE_EXCEPTIONS"] is False
    assert not any(app._dev_tools[k] for k in ("ui", "props_check", "hot_reload", "prune_errors", "serve_dev_bundles"))
    assert app.enable_dev_tools(debug=True, dev_tools_ui=True) is False  # what app.run would do
    assert app._enable_mcp is False
    rules = {rule.rule for rule in app.server.url_map.iter_rules()}
    assert not any("mcp" in rule for rule in rules), rules
    client = app.server.test_client()
    assert sign_in(client, "ada").status_code == 302
    page = client.get("/").get_data(as_text=True)
    config = json.loads(page.split('<script id="_dash-config" type="application/json">')[1].split("</script>")[0])
    assert config["ui"] is False and config["props_check"] is False and "hot_reload" not in config
    tools = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for path in ("/_mcp", "/_mcp/", "/mcp", "/_dash-mcp"):
        response = client.post(path, json=tools, headers={"X-CSRFToken": client.get_cookie("_csrf_token").value})
        text = response.get_data(as_text=True)
        assert response.status_code in (404, 405), (path, response.status_code)
        assert "tools" not in text and "overview-tick" not in text and "callback" not in text.lower(), path
    get = client.get("/_mcp")  # the page shell, like any unknown path: no tools, no callbacks
    assert "tools" not in get.get_data(as_text=True) and "getRowsRequest" not in get.get_data(as_text=True)


def test_sec008_anonymous_and_disabled_sessions_get_nothing_from_the_dash_endpoints(console):
    for role in ("anonymous", "disabled"):
        client = console.clients[role]
        for path in ("/_dash-layout", "/_dash-dependencies"):
            response = client.get(path)
            assert response.status_code == 401 and one_line_error(response), (role, path)
        response = console.post(role, {"output": "page.children", "inputs": [], "state": []})
        assert response.status_code == 401 and one_line_error(response)
        for path in ("/", "/tasks", f"/tasks/{console.sentinel_task}", "/users", "/history"):
            response = client.get(path)
            assert response.status_code == 302 and response.headers["Location"].startswith("/login"), (role, path)
    assert console.clients["admin"].get("/_dash-layout").status_code == 200
