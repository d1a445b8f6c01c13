"""Sign-in, sessions and CSRF through the real Flask app (no browser needed)."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select, update

from core.auth.passwords import verify_password
from core.auth.users import ensure_admin
from dashboard.app import create_app
from db.models import AuditLog, User
from tests.support.constants import PASSWORD, ROLE_USERS


@pytest.fixture
def app(settings, runtime):
    return create_app(settings, runtime)


def login_token(client, path="/login") -> str:
    page = client.get(path)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def sign_in(client, username, password=PASSWORD):
    token = login_token(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def callback_token(client) -> str:
    cookie = client.get_cookie("_csrf_token")
    return cookie.value if cookie else ""


OVERVIEW_OUTPUTS = [
    ("overview-cards", "children"),
    ("overview-matrix", "children"),
    ("overview-throughput", "figure"),
    ("overview-workers", "children"),
    ("overview-errors", "children"),
    ("overview-updated", "children"),
]


def overview_request() -> dict:
    return {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in OVERVIEW_OUTPUTS) + "..",
        "outputs": [{"id": i, "property": p} for i, p in OVERVIEW_OUTPUTS],
        "inputs": [{"id": "overview-tick", "property": "n_intervals", "value": 1}],
        "changedPropIds": ["overview-tick.n_intervals"],
        "state": [],
    }


def test_con_a001_anonymous_requests_get_no_application_data(app):
    client = app.server.test_client()
    page = client.get("/tasks")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/tasks")
    for path in ("/_dash-layout", "/_dash-dependencies"):
        response = client.get(path)
        assert response.status_code == 401 and b"sign in first" in response.data
    response = client.post("/_dash-update-component", json=overview_request())
    assert response.status_code == 401 and b"queued" not in response.data


def test_con_a002_wrong_password_and_unknown_user_get_the_same_answer(app, runtime):
    client = app.server.test_client()
    wrong = sign_in(client, ROLE_USERS["operator"], "not the password")
    unknown = sign_in(client, "nobody-here", "not the password")
    for response in (wrong, unknown):
        assert response.status_code == 401 and "wrong user name or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    with runtime.db.session() as session:
        outcomes = session.execute(select(AuditLog.actor, AuditLog.outcome).where(AuditLog.action == "sign_in")).all()
    assert sorted(outcomes) == [("nobody-here", "denied"), (ROLE_USERS["operator"], "denied")]


def test_con_a003_login_without_the_form_token_is_refused(app):
    client = app.server.test_client()
    response = client.post("/login", data={"username": ROLE_USERS["admin"], "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_con_a004_signed_in_user_runs_callbacks_only_with_the_csrf_header(app):
    client = app.server.test_client()
    assert sign_in(client, ROLE_USERS["viewer"]).status_code == 302
    assert client.get("/").status_code == 200
    refused = client.post("/_dash-update-component", json=overview_request())
    assert refused.status_code == 403
    accepted = client.post(
        "/_dash-update-component", json=overview_request(), headers={"X-CSRFToken": callback_token(client)}
    )
    assert accepted.status_code == 200
    cards = json.dumps(accepted.get_json()["response"]["overview-cards"])
    assert "Queued" in cards and "Running" in cards


def test_con_a005_a_session_captured_before_logout_no_longer_works(app):
    client = app.server.test_client()
    sign_in(client, ROLE_USERS["manager"])
    captured = client.get_cookie("session").value
    token = callback_token(client)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = app.server.test_client()
    replay.set_cookie("session", captured)
    replay.set_cookie("_csrf_token", token)
    assert replay.get("/").status_code == 302
    response = replay.post("/_dash-update-component", json=overview_request(), headers={"X-CSRFToken": token})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        {"role": "viewer", "session_version": User.session_version + 1},
        {"active": False},
        {"password_hash": "x", "session_version": User.session_version + 1},
    ],
    ids=["role", "disabled", "password"],
)
def test_con_a006_role_change_disable_or_new_password_ends_the_session(app, runtime, change):
    client = app.server.test_client()
    sign_in(client, ROLE_USERS["admin"])
    assert client.get("/users").status_code == 200
    with runtime.db.session(write=True) as session:
        session.execute(update(User).where(User.username == ROLE_USERS["admin"]).values(**change))
    assert client.get("/").status_code == 302


def test_con_a007_first_start_creates_one_admin(runtime):
    with runtime.db.session(write=True) as session:
        session.execute(update(User).where(User.role == "admin").values(active=False))
    generated = ensure_admin(runtime.db)
    assert generated and len(generated) >= 12
    assert ensure_admin(runtime.db) is None  # only once
    with runtime.db.session() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
    assert admin.role == "admin" and verify_password(admin.password_hash, generated)


def test_con_a008_next_parameter_cannot_redirect_off_site(app):
    client = app.server.test_client()
    token = login_token(client, "/login?next=//evil.example/")
    response = client.post(
        "/login?next=//evil.example/",
        data={"username": ROLE_USERS["viewer"], "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/"
