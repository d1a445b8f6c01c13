"""Security, part 3: the HTTP side. CSRF and cross-origin requests, sessions that must end,
cookie flags, trusted proxies, sign-in throttling, security headers, the production secret key,
open redirects, and an audit row for every sign-in, sign-out, action, denial and user change."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from http.cookies import SimpleCookie

import pytest
from sqlalchemy import func, select, update

from core.auth.users import create_user
from core.errors import InvalidInput
from core.runtime import Runtime
from core.settings import load_settings
from dashboard.app import create_app
from db.models import AuditLog, Task, User, utcnow
from tests.support.constants import PASSWORD, ROLE_USERS, ROOT
from tests.support.forge import callbacks, csrf_cookie, form_token, one_line_error, post, sign_in, snapshot

EVIL = "https://evil.example"


@pytest.fixture
def app(settings, runtime):
    return create_app(settings, runtime)


def signed_in(app, role: str, address: str = "127.0.0.1", **client_options):
    client = app.server.test_client(**client_options)
    client.environ_base["REMOTE_ADDR"] = address
    assert sign_in(client, ROLE_USERS[role]).status_code == 302
    return client


def by_name(app, client) -> dict:
    return {cb.name: cb for cb in callbacks(app, client)}


def audit_rows(runtime, **where):
    with runtime.db.session() as session:
        query = select(AuditLog).order_by(AuditLog.id)
        for key, value in where.items():
            query = query.where(getattr(AuditLog, key) == value)
        return session.scalars(query).all()


# -- CSRF and cross-origin requests --------------------------------------------------------------


def test_sec030_login_without_token_or_from_another_site_is_refused(app, runtime):
    client = app.server.test_client()
    attempts = [
        ({}, {"csrf_token": ""}),  # no token
        ({}, {"csrf_token": "forged"}),  # a wrong one
        ({"Origin": EVIL}, {}),  # the right token, from another site
        ({"Referer": EVIL + "/phish"}, {}),
        ({"Origin": "null"}, {}),
    ]
    for headers, form in attempts:
        data = {"username": "otto", "password": PASSWORD, "csrf_token": form_token(client), **form}
        response = client.post("/login", data=data, headers=headers)
        assert response.status_code in (400, 403), (headers, form, response.status_code)
        assert client.get("/").status_code == 302, "not signed in"
    refusals = audit_rows(runtime, action="sign_in")
    assert [(r.actor, r.outcome) for r in refusals] == [("otto", "denied")] * len(attempts)
    assert all("CSRF" in r.detail or "cross-origin" in r.detail for r in refusals)
    # The same form from the console's own page signs in.
    data = {"username": "otto", "password": PASSWORD, "csrf_token": form_token(client)}
    assert client.post("/login", data=data, headers={"Origin": "http://localhost"}).status_code == 302


def test_sec031_logout_and_callbacks_without_token_or_from_another_site_are_refused(app, runtime):
    client = signed_in(app, "manager")
    token = csrf_cookie(client)
    grid = by_name(app, client)["tasks.grid_action"]
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    click = grid.body({("tasks-grid", "cellRendererData"): {"value": {"action": "cancel", "task_id": task_id,
                                                                       "nonce": 1}}})  # fmt: skip
    other = signed_in(app, "admin")
    before = snapshot(runtime)
    refused = [
        post(client, click, token=""),
        post(client, click, token="forged"),
        post(client, click, token=csrf_cookie(other)),  # another session's token
        post(client, click, Origin=EVIL),
        post(client, click, Referer=EVIL + "/page"),
        post(client, click, Origin="http://localhost:1"),  # another port is another origin
        client.post("/logout", data={}),
        client.post("/logout", data={"csrf_token": token}, headers={"Origin": EVIL}),
    ]
    for response in refused:
        assert response.status_code == 403 and one_line_error(response), response.status_code
    assert snapshot(runtime).tables == before.tables, "nothing changed"
    rows = audit_rows(runtime, outcome="denied")
    assert [(r.actor, r.action) for r in rows] == [("mona", "callback")] * 6 + [("mona", "sign_out")] * 2
    assert client.get("/").status_code == 200, "still signed in"
    # The HTTP API takes bearer tokens, never cookies: the console's CSRF rules do not apply to it.
    api = client.post("/api/v1/tasks", json={"name": "demo.echo"}, headers={"Origin": EVIL})
    assert "cross-origin" not in api.get_data(as_text=True) and "CSRF" not in api.get_data(as_text=True)
    # With its token, from its own origin, the same request goes through: the dialog asks.
    accepted = post(client, click, Origin="http://localhost")
    assert accepted.status_code == 200 and accepted.get_json()["response"]["task-action-pending"]["data"]
    assert client.post("/logout", data={"csrf_token": token}, headers={"Origin": "http://localhost"}).status_code == 302


# -- sessions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["logout", "password", "role", "disable"])
def test_sec032_a_cookie_captured_before_logout_password_role_change_or_disable_stops_working(app, runtime, ending):
    create_user(runtime.db, "walt", PASSWORD, "manager")
    victim = app.server.test_client()
    assert sign_in(victim, "walt").status_code == 302
    assert victim.get("/_dash-layout").status_code == 200
    captured = {name: victim.get_cookie(name).value for name in ("session", "_csrf_token")}
    admin = signed_in(app, "admin")
    act = by_name(app, admin)["users.act"]
    if ending == "logout":
        assert victim.post("/logout", data={"csrf_token": captured["_csrf_token"]}).status_code == 302
    else:
        button = {"password": "reset-password", "role": "change-role", "disable": "disable-confirm"}[ending]
        values = {
            (button, "n_clicks"): 1,
            ("target-user", "value"): "walt",
            ("target-role", "value"): "viewer",
            ("reset-password-input", "value"): "a brand new password",
            ("users-data", "data"): [{"username": "walt", "role": "manager", "active": True}],
        }
        response = post(admin, act.body(values))
        assert response.status_code == 200 and "success" in response.get_data(as_text=True), response.get_data()
    replay = app.server.test_client()
    for name, value in captured.items():
        replay.set_cookie(name, value)
    assert replay.get("/").status_code == 302
    assert replay.get("/tasks").status_code == 302
    for path in ("/_dash-layout", "/_dash-dependencies"):
        assert replay.get(path).status_code == 401
    overview = by_name(app, admin)["overview.refresh"]
    response = post(replay, overview.body({("overview-tick", "n_intervals"): 1}), token=captured["_csrf_token"])
    assert response.status_code == 401 and one_line_error(response)
    # Signing in again gives the account as it is now.
    fresh = app.server.test_client()
    password = "a brand new password" if ending == "password" else PASSWORD
    outcome = sign_in(fresh, "walt", password)
    if ending == "disable":
        assert outcome.status_code == 401
    else:
        assert outcome.status_code == 302
        role = "viewer" if ending == "role" else "manager"
        route = by_name(app, admin)["app.route"].body({("url", "pathname"): "/"})
        navbar = json.dumps(post(fresh, route).get_json(), ensure_ascii=False)
        assert f"walt · {role}" in navbar


def _cookies(response) -> list[tuple[str, dict]]:
    found = []
    for header in response.headers.getlist("Set-Cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            flags = {k.lower(): v for k, v in morsel.items() if v}
            lowered = header.lower()
            flags["httponly"] = "httponly" in lowered
            flags["secure"] = "; secure" in lowered
            found.append((name, flags))
    return found


def _session_flow(app, runtime, client, base_url: str | None = None, **headers) -> list[tuple[str, dict]]:
    """Every response of a whole visit: sign-in page, a failed and a good sign-in, pages,
    callbacks, a throttled sign-in, sign-out. Returns every cookie they set."""
    cookies = []
    how = {"headers": headers, **({"base_url": base_url} if base_url else {})}

    def keep(response):
        cookies.extend(_cookies(response))
        return response

    def login(username, password):
        data = {"username": username, "password": password, "csrf_token": token}
        keep(client.post("/login", data=data, **how))

    keep(client.get("/login", **how))
    token = form_token(client, **how)
    login("vera", "wrong")
    login("vera", PASSWORD)
    for path in ("/", "/_dash-layout", "/_dash-dependencies"):
        keep(client.get(path, **how))
    route = next(cb for cb in callbacks(app, client, **how) if cb.name == "app.route")
    keep(post(client, route.body({("url", "pathname"): "/tasks"}), base_url=base_url, **headers))
    for _ in range(6):
        login("ghost", "x")
    keep(client.post("/logout", data={"csrf_token": csrf_cookie(client)}, **how))
    return cookies


def test_sec033_cookies_are_httponly_and_samesite_and_secure_over_https(settings, runtime):
    plain = create_app(settings, runtime)
    cookies = _session_flow(plain, runtime, plain.server.test_client())
    names = {name for name, _ in cookies}
    assert {"session", "_csrf_token"} <= names, names
    for name, flags in cookies:
        assert flags.get("samesite") in ("Lax", "Strict"), (name, flags)
        assert not flags["secure"], (name, flags)
        if name == "_csrf_token":
            # Dash's renderer reads it from document.cookie to send it back as X-CSRFToken; it is
            # no credential: it works only next to the HttpOnly session cookie it belongs to.
            assert flags["samesite"] == "Strict" and not flags["httponly"]
        else:
            assert flags["httponly"], (name, flags)
    # Served over HTTPS: Secure on every cookie.
    secure = create_app(settings, runtime)
    cookies = _session_flow(secure, runtime, secure.server.test_client(), base_url="https://localhost")
    assert cookies and all(flags["secure"] for _, flags in cookies), cookies


def test_sec034_forwarded_headers_count_only_from_trusted_proxies(settings, runtime):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5", "X-Forwarded-Host": "console.example"}
    untrusted = create_app(settings, runtime)
    client = untrusted.server.test_client()
    cookies = _session_flow(untrusted, runtime, client, **forwarded)
    assert not any(flags["secure"] for _, flags in cookies)
    assert "Strict-Transport-Security" not in client.get("/login", headers=forwarded).headers
    assert {r.address for r in audit_rows(runtime, action="sign_in")} == {"127.0.0.1"}

    trusted = create_app(replace(settings, trusted_proxies=1), runtime)
    client = trusted.server.test_client()
    # Behind one proxy the address is what that proxy saw, whatever a client put before it.
    chain = dict(forwarded, **{"X-Forwarded-For": "198.51.100.1, 203.0.113.5", "Origin": "https://console.example"})
    cookies = _session_flow(trusted, runtime, client, **chain)
    assert cookies and all(flags["secure"] for _, flags in cookies)
    assert "Strict-Transport-Security" in client.get("/login", headers=chain).headers
    assert {r.address for r in audit_rows(runtime, action="sign_in")} == {"127.0.0.1", "203.0.113.5"}
    # The proxy's Host is the origin: a page of another site is still refused.
    evil = dict(chain, Origin=EVIL)
    response = client.post("/login", data={"username": "vera", "password": PASSWORD,
                                           "csrf_token": form_token(client)}, headers=evil)  # fmt: skip
    assert response.status_code == 403


# -- sign-in throttling --------------------------------------------------------------------------


def _attempt(client, username, password, address):
    client.environ_base["REMOTE_ADDR"] = address
    token = form_token(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def _alert(response) -> str:
    return response.get_data(as_text=True).split('role="alert">')[1].split("<")[0]


def test_sec035_sign_in_throttled_per_account_per_address_and_across_processes(settings, runtime):
    limited = replace(settings, login_max_failures=3, login_max_failures_per_address=5,
                                      login_window_seconds=600.0)  # fmt: skip
    first = create_app(limited, runtime)
    second_runtime = Runtime.open(limited, require_broker=True)  # another process's engine and broker
    try:
        second = create_app(limited, second_runtime)
        a, b = first.server.test_client(), second.server.test_client()
        for i, client in enumerate((a, b, a)):  # failures spread over two web processes
            assert _attempt(client, "otto", "wrong password", f"192.0.2.{i}").status_code == 401
        for client in (a, b):
            throttled = _attempt(client, "otto", PASSWORD, "192.0.2.200")  # the right password
            assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
            assert "too many failed sign-ins" in throttled.get_data(as_text=True)
        assert a.get("/").status_code == 302 and b.get("/").status_code == 302
        # An unknown name is throttled the same way, with the same words.
        for i in range(3):
            assert _attempt(b, "ghost", "wrong password", f"192.0.2.{10 + i}").status_code == 401
        ghost = _attempt(a, "ghost", "whatever", "192.0.2.201")
        assert ghost.status_code == 429 and _alert(ghost) == _alert(throttled)

        # Per address: five failures from one address, over five names, lock it for everyone.
        for name in ("u1", "u2", "u3", "u4", "u5"):
            assert _attempt(a, name, "wrong password", "192.0.2.99").status_code == 401
        assert _attempt(b, "mona", PASSWORD, "192.0.2.99").status_code == 429
        assert _attempt(b, "mona", PASSWORD, "192.0.2.98").status_code == 302

        # A successful sign-in clears the account's count (not the address's).
        assert _attempt(a, "vera", "wrong password", "192.0.2.50").status_code == 401
        assert _attempt(a, "vera", "wrong password", "192.0.2.51").status_code == 401
        assert _attempt(a, "vera", PASSWORD, "192.0.2.52").status_code == 302
        for i in range(2):
            assert _attempt(b, "vera", "wrong password", f"192.0.2.{60 + i}").status_code == 401
        assert _attempt(b, "vera", PASSWORD, "192.0.2.70").status_code == 302

        # Once the failures are older than the window, the account may try again.
        with runtime.db.session(write=True) as session:
            for row in session.scalars(select(AuditLog)).all():
                row.at = row.at - timedelta(seconds=601)
        assert _attempt(b, "otto", PASSWORD, "192.0.2.200").status_code == 302
    finally:
        second_runtime.close()

    rows = audit_rows(runtime, action="sign_in", actor="otto")
    assert [(r.outcome, r.detail.split(":")[0] if r.detail else None) for r in rows] == (
        [("denied", "wrong user name or password")] * 3 + [("denied", "throttled")] * 2 + [("ok", None)]
    )


def test_sec036_a_burst_of_guesses_gets_no_more_than_the_limit_through(settings, runtime):
    limited = replace(settings, login_max_failures=3, login_max_failures_per_address=1000)
    app = create_app(limited, runtime)
    results: list[int] = []

    def guess(i: int) -> None:
        client = app.server.test_client()
        results.append(_attempt(client, "otto", f"guess {i}", f"192.0.2.{i}").status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    checked = audit_rows(runtime, action="sign_in", actor="otto", detail="wrong user name or password")
    assert len(checked) == 3, "passwords checked"
    assert sorted(results) == [401] * 3 + [429] * 9


def test_sec037_unknown_user_and_wrong_password_cost_the_same_time(settings, runtime):
    app = create_app(replace(settings, login_max_failures_per_address=1000, login_max_failures=1000), runtime)
    client = app.server.test_client()
    _attempt(client, "otto", "warm up", "192.0.2.1")
    _attempt(client, "nobody-warm", "warm up", "192.0.2.1")

    def timed(username: str) -> float:
        started = time.perf_counter()
        response = _attempt(client, username, "not the password", "192.0.2.2")
        assert response.status_code == 401 and "wrong user name or password" in response.get_data(as_text=True)
        return time.perf_counter() - started

    known, unknown = [], []
    for i in range(9):  # interleaved, so a load change on the machine hits both sides alike
        known.append(timed("otto"))
        unknown.append(timed(f"nobody{i}"))
    ratio = statistics.median(unknown) / statistics.median(known)
    print(f"\nsec037 median sign-in: known {statistics.median(known) * 1000:.0f} ms, unknown "
          f"{statistics.median(unknown) * 1000:.0f} ms (ratio {ratio:.2f})")  # fmt: skip
    assert 0.6 < ratio < 1.6


# -- headers -------------------------------------------------------------------------------------


def test_sec038_every_response_carries_the_security_headers(app, runtime):
    anonymous = app.server.test_client()
    viewer = signed_in(app, "viewer")
    suite = next(p for p in viewer.get("/").get_data(as_text=True).split('"') if "/_dash-component-suites/" in p)
    requests = [
        (anonymous, "GET", "/login"),
        (anonymous, "GET", "/"),
        (anonymous, "GET", "/_dash-layout"),
        (anonymous, "POST", "/_dash-update-component"),
        (anonymous, "GET", "/assets/switchyard.css"),
        (anonymous, "GET", suite),
        (anonymous, "GET", "/healthz"),
        (anonymous, "GET", "/readyz"),
        (anonymous, "GET", "/metrics"),
        (anonymous, "GET", "/api/v1/me"),
        (anonymous, "GET", "/no/such/page"),
        (viewer, "GET", "/"),
        (viewer, "GET", "/tasks/x"),
        (viewer, "GET", "/_dash-layout"),
        (viewer, "GET", "/_dash-dependencies"),
        (viewer, "POST", "/_dash-update-component"),
        (viewer, "GET", "/_dash-component-suites/nope/x.js"),
    ]
    hashes = app.csp_hashes()
    for client, method, path in requests:
        response = client.open(path, method=method, headers={"X-CSRFToken": csrf_cookie(client)})
        h = response.headers
        where = f"{method} {path} ({response.status_code}) {dict(h)}"
        csp = dict(part.strip().split(" ", 1) for part in h["Content-Security-Policy"].split(";"))
        scripts = csp["script-src"].split()
        assert scripts[0] == "'self'" and set(scripts[1:]) == set(hashes), where
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts, where
        assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'", where
        assert csp["default-src"] == "'self'" and csp["base-uri"] == "'none'", where
        assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY", where
        assert h["Referrer-Policy"] == "same-origin" and "camera=()" in h["Permissions-Policy"], where
        assert "Strict-Transport-Security" not in h, where
        if not path.startswith(("/assets/", "/_dash-component-suites/")):
            assert h["Cache-Control"] == "no-store", where
        assert response.status_code < 500, where
    assert len(hashes) >= 3  # the renderer and the two clientside callbacks
    https = app.server.test_client()
    assert https.get("/login", base_url="https://localhost").headers["Strict-Transport-Security"].startswith("max-age=")


# -- the production secret key -------------------------------------------------------------------


def _environ(tmp_path, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "DASH_"))}
    environ.update(SWITCHYARD_DATA_DIR=str(tmp_path), SWITCHYARD_PORT="0", **env)
    return environ


def _serve(tmp_path, **env):
    environ = _environ(tmp_path, **env)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "serve"],
        env=environ,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "key, words",
    [
        (None, "needs SWITCHYARD_SECRET_KEY"),
        ("short-but-random-Xq9", "20 characters"),
        ("change-me-change-me-change-me-change-me", "placeholder"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "placeholder"),
    ],
    ids=["missing", "short", "default", "repetitive"],
)
def test_sec039_production_refuses_to_start_without_a_strong_secret_key(tmp_path, key, words):
    env = {"SWITCHYARD_ENV": "production"} | ({"SWITCHYARD_SECRET_KEY": key} if key else {})
    process = _serve(tmp_path, **env)
    out, err = process.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert process.returncode == 2, (process.returncode, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "password" not in out and not (tmp_path / "secret_key").exists()
    assert not (tmp_path / "switchyard.db").exists(), "refused before touching anything"


def test_sec040_production_starts_with_a_strong_key_and_development_without_one(tmp_path, settings, runtime):
    with pytest.raises(InvalidInput, match="SWITCHYARD_SECRET_KEY"):
        create_app(replace(settings, env="production"), runtime)
    with pytest.raises(InvalidInput, match="SWITCHYARD_ENV"):
        load_settings({"SWITCHYARD_ENV": "staging"})
    strong = "Vd1v0kq2X-7yTqH3pM_sLr9cZw4eB8nJ5uFgA6oKiE0"
    assert create_app(replace(settings, env="production", secret_key=strong), runtime).server.secret_key == strong
    production = {
        "SWITCHYARD_ENV": "production",
        "SWITCHYARD_SECRET_KEY": strong,
        "SWITCHYARD_ADMIN_PASSWORD": PASSWORD,
    }
    migrate = [sys.executable, str(ROOT / "run.py"), "db", "upgrade"]
    subprocess.run(migrate, env=_environ(tmp_path / "prod", **production), cwd=ROOT, check=True, timeout=120)
    process = _serve(tmp_path / "prod", **production)
    try:
        line = process.stdout.readline()
        assert "Switchyard console: http://" in line, (line, process.stderr.read() if process.poll() else "")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0


# -- open redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "\\\\evil.example",
        "/\n/evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
    ],  # fmt: skip
)
def test_sec041_sign_in_never_redirects_off_site(app, target):
    client = app.server.test_client()
    query = {"next": target}
    page = client.get("/login", query_string=query).get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post("/login", query_string=query, data={"username": "vera", "password": PASSWORD,
                                                                "csrf_token": token})  # fmt: skip
    assert response.status_code == 302 and response.headers["Location"] == "/", response.headers["Location"]


# -- the audit log -------------------------------------------------------------------------------


def test_sec042_every_sign_in_sign_out_action_denial_and_user_change_is_one_audit_row(app, runtime):
    started = utcnow()
    earlier = {r.id for r in audit_rows(runtime)}  # the fixture's users
    expected: list[tuple] = []
    admin = signed_in(app, "admin", "203.0.113.1")
    expected.append(("ada", "sign_in", "ada", "ok", "203.0.113.1"))
    stranger = app.server.test_client()
    stranger.environ_base["REMOTE_ADDR"] = "203.0.113.2"
    assert sign_in(stranger, "ada", "wrong password").status_code == 401
    expected.append(("ada", "sign_in", "ada", "denied", "203.0.113.2"))
    assert sign_in(stranger, "nobody", "wrong password").status_code == 401
    expected.append(("nobody", "sign_in", "nobody", "denied", "203.0.113.2"))
    viewer = signed_in(app, "viewer", "203.0.113.3")
    expected.append(("vera", "sign_in", "vera", "ok", "203.0.113.3"))
    found = by_name(app, admin)

    queued = runtime.service.dispatch_task("demo.echo", priority=2)
    doomed = runtime.service.dispatch_task("demo.echo", priority=2)
    failed = runtime.service.dispatch_task("demo.fail", priority=2)
    with runtime.db.session(write=True) as session:
        session.execute(update(Task).where(Task.id == failed).values(status="failed", publish_due_at=None))

    def click(client, action, task_id):
        value = {"value": {"action": action, "task_id": task_id, "nonce": time.time()}}
        return post(client, found["tasks.grid_action"].body({("tasks-grid", "cellRendererData"): value}))

    def confirmed(client, action, task_id, reason=""):
        """Click, then confirm in the dialog: every task action asks first."""
        token = click(client, action, task_id).get_json()["response"]["task-action-pending"]["data"]
        values = {
            ("reason-confirm", "n_clicks"): 1,
            ("task-action-pending", "data"): token,
            ("reason-input", "value"): reason,
        }
        return post(client, found["tasks.reason_dialog"].body(values)).get_data(as_text=True)

    assert "to 10 (Critical)" in confirmed(admin, "critical", queued, "outage")
    expected.append(("ada", "critical", queued, "ok", "203.0.113.1"))
    assert "cancelled" in confirmed(admin, "cancel", doomed, "not needed")
    expected.append(("ada", "cancel", doomed, "ok", "203.0.113.1"))
    assert "queued again" in confirmed(admin, "retry", failed)
    expected.append(("ada", "retry", failed, "ok", "203.0.113.1"))
    assert "not allowed" in click(viewer, "retry", failed).get_data(as_text=True)
    expected.append(("vera", "retry", failed, "denied", "203.0.113.3"))
    assert post(viewer, found["users.refresh"].body({("users-refresh", "data"): 1})).status_code == 403
    expected.append(("vera", "callback", "users.refresh", "denied", "203.0.113.3"))
    # An action refused because the task moved on is audited too (refused, not denied).
    assert "only queued tasks" in confirmed(admin, "cancel", doomed)
    expected.append(("ada", "cancel", doomed, "refused", "203.0.113.1"))

    def users(button, **values):
        sent = {(button, "n_clicks"): 1}
        for key, value in values.items():
            sent[(key.replace("_", "-"), "data" if key == "users_data" else "value")] = value
        return post(admin, found["users.act"].body(sent)).get_data(as_text=True)

    assert "Created walt" in users("create-user", new_username="walt", new_password=PASSWORD, new_role="viewer")
    expected.append(("ada", "user.create", "walt", "ok", "203.0.113.1"))
    assert "now operator" in users("change-role", target_user="walt", target_role="operator")
    expected.append(("ada", "user.role", "walt", "ok", "203.0.113.1"))
    data = [{"username": "walt", "role": "operator", "active": True}]
    assert "disabled" in users("disable-confirm", target_user="walt", users_data=data)
    expected.append(("ada", "user.disable", "walt", "ok", "203.0.113.1"))
    data = [{"username": "walt", "role": "operator", "active": False}]
    assert "enabled" in users("toggle-active", target_user="walt", users_data=data)
    expected.append(("ada", "user.enable", "walt", "ok", "203.0.113.1"))
    assert "New password" in users("reset-password", target_user="walt", reset_password_input="another password")
    expected.append(("ada", "user.password", "walt", "ok", "203.0.113.1"))
    assert "already exists" in users("create-user", new_username="walt", new_password=PASSWORD, new_role="viewer")
    expected.append(("ada", "user.create", "walt", "refused", "203.0.113.1"))

    assert viewer.post("/logout", data={"csrf_token": csrf_cookie(viewer)}).status_code == 302
    expected.append(("vera", "sign_out", "vera", "ok", "203.0.113.3"))
    assert admin.post("/logout", data={"csrf_token": csrf_cookie(admin)}).status_code == 302
    expected.append(("ada", "sign_out", "ada", "ok", "203.0.113.1"))
    finished = utcnow()

    rows = [r for r in audit_rows(runtime) if r.id not in earlier]
    assert [(r.actor, r.action, r.target, r.outcome, r.address) for r in rows] == expected
    for row in rows:
        assert row.at.utcoffset() == timedelta(0) and started <= row.at <= finished
    assert [r.at for r in rows] == sorted(r.at for r in rows)
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(User).where(User.username == "walt")) == 1


def test_sec043_an_admin_demoted_mid_change_is_refused_and_audited(runtime, monkeypatch):
    from core.auth import user_admin

    create_user(runtime.db, "walt", PASSWORD, "viewer")
    create_user(runtime.db, "boss", PASSWORD, "admin")
    authorize = user_admin._authorize

    def demoted_meanwhile(db, actor, action, target, address):
        acting = authorize(db, actor, action, target, address)
        with db.session(write=True) as session:  # another admin demotes them between check and change
            session.execute(update(User).where(User.username == "boss").values(role="viewer"))
        return acting

    monkeypatch.setattr(user_admin, "_authorize", demoted_meanwhile)
    with pytest.raises(Exception, match="may no longer manage users"):
        user_admin.change_role(runtime.db, "boss", "walt", "admin", address="203.0.113.8")
    with runtime.db.session() as session:
        assert session.scalar(select(User.role).where(User.username == "walt")) == "viewer"
    rows = audit_rows(runtime, actor="boss")
    assert [(r.action, r.target, r.outcome, r.address) for r in rows] == [
        ("user.role", "walt", "denied", "203.0.113.8")
    ]
