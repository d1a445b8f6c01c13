"""The console in a real headless Chromium (dash[testing]), signed in through the form."""

from __future__ import annotations

import re

import pytest
import requests
from selenium.webdriver.support.select import Select
from sqlalchemy import select

from db.models import AuditLog, User
from tests.support.constants import PASSWORD, ROLE_USERS
from tests.support.harness import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def sign_in(duo, role: str) -> None:
    duo.driver.delete_all_cookies()
    duo.driver.get(duo.server.url + "/login")
    duo.find_element("#username").send_keys(ROLE_USERS[role])
    duo.find_element("#password").send_keys(PASSWORD)
    duo.find_element("#login-button").click()
    duo.wait_for_text_to_equal("#whoami", f"{ROLE_USERS[role]} · {role}")


def nav_links(duo) -> list[str]:
    return [link.text for link in duo.find_elements("#navbar .nav-link")]


def test_con_b001_overview_is_live_and_the_navbar_follows_the_role(console, runtime):
    for priority in (9, 9, 5, 1):
        runtime.service.dispatch_task("demo.echo", priority=priority)
    sign_in(console, "viewer")
    console.wait_for_text_to_equal("#queued-high", "2")
    console.wait_for_text_to_equal("#queued-normal", "1")
    assert nav_links(console) == ["Overview", "Tasks"]
    runtime.service.dispatch_task("demo.echo", priority=10)
    console.wait_for_text_to_equal("#queued-high", "3", timeout=10)  # live refresh
    sign_in(console, "admin")
    assert nav_links(console) == ["Overview", "Tasks", "History", "Users"]


def test_con_b002_sign_out_ends_the_session(console):
    sign_in(console, "operator")
    console.find_element("#sign-out").click()
    console.wait_for_element("#login-button")
    console.driver.get(console.server.url + "/tasks")
    console.wait_for_element("#login-button")


def task_row(runtime, task_id) -> dict:
    return runtime.service.describe_task(task_id)


def click_action(duo, action: str, task_id: str) -> None:
    duo.wait_for_element(f"#action-{action}-{task_id}", timeout=15).click()


def confirm_reason(duo, reason: str) -> None:
    duo.wait_for_element("#reason-input").send_keys(reason)
    duo.find_element("#reason-confirm").click()


def test_con_b003_operator_prioritizes_a_queued_task_with_a_reason(console, runtime):
    task_id = runtime.service.dispatch_task("demo.echo", priority=2)
    sign_in(console, "operator")
    console.driver.get(console.server.url + "/tasks")
    assert console.find_elements(f"#action-urgent-{task_id}") == []
    click_action(console, "prioritize", task_id)
    confirm_reason(console, "customer escalation")
    console.wait_for_contains_text("#task-action-result", "raised from 2", timeout=15)
    row = task_row(runtime, task_id)
    assert (row["priority"], row["bucket"]) == (8, "high")
    assert row["priority_history"][0]["reason"] == "customer escalation"
    subjects = runtime.broker.run(runtime.broker.broker.subject_counts())
    assert subjects == {"tasks.webapp.default.high": 1}


def test_con_b004_manager_makes_one_urgent_and_cancels_another_viewer_sees_no_buttons(console, runtime):
    urgent = runtime.service.dispatch_task("demo.echo", priority=5)
    doomed = runtime.service.dispatch_task("demo.echo", priority=5)
    sign_in(console, "viewer")
    console.driver.get(console.server.url + "/tasks")
    console.wait_for_element(f"a.task-link[data-task-id='{urgent}']", timeout=15)
    assert console.find_elements(".task-action") == []
    sign_in(console, "manager")
    console.driver.get(console.server.url + "/tasks")
    assert console.find_elements(f"#action-critical-{urgent}") == []
    click_action(console, "urgent", urgent)
    confirm_reason(console, "board meeting")
    console.wait_for_contains_text("#task-action-result", "to 9 (Urgent)", timeout=15)
    click_action(console, "cancel", doomed)
    confirm_reason(console, "sent twice")  # Cancel asks first; its reason is optional
    console.wait_for_contains_text("#task-action-result", "cancelled", timeout=15)
    assert task_row(runtime, urgent)["priority"] == 9
    assert task_row(runtime, doomed)["status"] == "cancelled"


def test_con_b005_admin_makes_a_task_critical_and_a_failed_one_is_retried(console, runtime):
    critical = runtime.service.dispatch_task("demo.echo", priority=0)
    failed = runtime.service.dispatch_task("demo.fail", priority=3)
    with runtime.db.session(write=True) as session:
        from db.models import Task

        session.get(Task, failed).status = "failed"
    sign_in(console, "admin")
    console.driver.get(console.server.url + "/tasks")
    click_action(console, "critical", critical)
    confirm_reason(console, "outage")
    console.wait_for_contains_text("#task-action-result", "to 10 (Critical)", timeout=15)
    click_action(console, "retry", failed)
    console.wait_for_text_to_equal("#reason-modal-title", "Retry this task?")  # it asks first, no reason
    console.find_element("#reason-confirm").click()
    console.wait_for_contains_text("#task-action-result", failed, timeout=15)
    assert task_row(runtime, critical)["priority"] == 10
    retried = task_row(runtime, failed)
    assert (retried["status"], retried["priority"], retried["generation"]) == ("queued", 3, 2)


def sign_in_as(duo, username: str, role: str, password: str = PASSWORD) -> None:
    duo.driver.delete_all_cookies()
    duo.driver.get(duo.server.url + "/login")
    duo.find_element("#username").send_keys(username)
    duo.find_element("#password").send_keys(password)
    duo.find_element("#login-button").click()
    duo.wait_for_text_to_equal("#whoami", f"{username} · {role}")


def click(duo, selector: str) -> None:
    """Click an element once it is there, scrolled to the middle of the window."""
    element = duo.wait_for_element(selector, timeout=15)
    duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def choose(duo, selector: str, value: str) -> None:
    """Pick an option of a <select>, once the option is there (option lists arrive by callback)."""
    duo.wait_for_element(f"{selector} option[value='{value}']", timeout=15)
    element = duo.find_element(selector)
    duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    Select(element).select_by_value(value)


def http_sign_in(base: str, username: str) -> requests.Session:
    """Another browser, as far as the server can tell: a session signed in through the form."""
    client = requests.Session()
    page = client.get(base + "/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post(
        base + "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    return client


def test_con_b006_admin_creates_a_user_and_changes_its_role(console, runtime):
    sign_in(console, "admin")
    console.driver.get(console.server.url + "/users")
    console.wait_for_element("#users-table")
    console.find_element("#new-username").send_keys("walt")
    choose(console, "#new-role", "viewer")
    console.find_element("#new-password").send_keys(PASSWORD)  # typing elsewhere closes the select
    click(console, "#create-user")
    console.wait_for_contains_text("#users-result", "Created walt (viewer).", timeout=15)
    console.wait_for_element("#users-table tr[data-username='walt']", timeout=15)
    assert user_row(runtime, "walt") == ("viewer", True, 1)

    # walt signs in somewhere else before the change.
    walt = http_sign_in(console.server.url, "walt")
    assert walt.get(console.server.url + "/_dash-layout", timeout=10).status_code == 200

    choose(console, "#target-user", "walt")
    # Choosing a user fills in its current role (a callback): wait for it before changing it.
    console.wait_for_element("#target-role option[value='viewer']:checked", timeout=15)
    choose(console, "#target-role", "operator")
    click(console, "#change-role")
    console.wait_for_contains_text("#users-result", "walt is now operator", timeout=15)
    console.wait_for_text_to_equal("#users-table tr[data-username='walt'] td:nth-child(2)", "operator", timeout=15)
    assert user_row(runtime, "walt") == ("operator", True, 2)
    with runtime.db.session() as session:
        audited = session.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.outcome)
            .where(AuditLog.target == "walt", AuditLog.action.in_(("user.create", "user.role")))
            .order_by(AuditLog.id)
        ).all()
    assert [tuple(r) for r in audited] == [("ada", "user.create", "ok"), ("ada", "user.role", "ok")]

    # The session walt had before the change is over; signing in again gives the new role.
    assert walt.get(console.server.url + "/_dash-layout", timeout=10).status_code == 401
    sign_in_as(console, "walt", "operator")
    assert nav_links(console) == ["Overview", "Tasks"]


def user_row(runtime, username: str):
    with runtime.db.session() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        return user.role, user.active, user.session_version


# Held back in the admin's page: the Confirm request of the reason dialog is recorded (URL and
# body exactly as Dash's renderer built them) and never sent, as if taken from a proxy log.
HOLD_CONFIRM = """
window.__held = [];
const send = window.fetch;
window.fetch = function (url, options) {
    const body = options && options.body;
    if (String(url).indexOf('_dash-update-component') >= 0 && typeof body === 'string'
            && body.indexOf('"reason-confirm.n_clicks"') >= 0) {
        window.__held.push({url: String(url), body: body});
        return new Promise(function () {});
    }
    return send.apply(this, arguments);
};
"""

# Sent from a signed-in page: its session cookie, and the CSRF header the way Dash sends it.
REPLAY = """
const request = arguments[0], done = arguments[arguments.length - 1];
const csrf = (document.cookie.match(/(?:^|; )_csrf_token=([^;]*)/) || [])[1] || '';
fetch(request.url, {
    method: 'POST', credentials: 'same-origin', body: request.body,
    headers: {'Content-Type': 'application/json', 'X-CSRFToken': decodeURIComponent(csrf)},
}).then(function (r) { return r.text().then(function (t) { done({status: r.status, body: t}); }); })
  .catch(function (e) { done({status: -1, body: String(e)}); });
"""


def test_con_b007_a_replayed_critical_request_from_an_operator_session_is_refused(console, runtime):
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    assert runtime.service.flush(10)
    broker = runtime.broker
    before_stream = broker.run(broker.broker.subject_counts())
    assert before_stream == {"tasks.webapp.default.normal": 1}

    sign_in(console, "admin")
    console.driver.get(console.server.url + "/tasks")
    click_action(console, "critical", task_id)
    console.driver.execute_script(HOLD_CONFIRM)
    confirm_reason(console, "outage")
    wait_until(lambda: console.driver.execute_script("return window.__held.length") == 1, 10, message="capture")
    captured = console.driver.execute_script("return window.__held[0]")
    assert task_row(runtime, task_id)["priority"] == 5  # held back: the admin's click never arrived

    sign_in(console, "operator")
    console.driver.get(console.server.url + "/tasks")
    console.wait_for_element("#tasks-grid", timeout=15)
    console.driver.set_script_timeout(30)
    replayed = console.driver.execute_async_script(REPLAY, captured)
    assert replayed["status"] == 200, replayed
    assert "not issued to you" in replayed["body"]

    row = task_row(runtime, task_id)
    assert (row["priority"], row["bucket"], row["generation"], row["status"]) == (5, "normal", 1, "queued")
    assert row["priority_history"] == []
    assert broker.run(broker.broker.subject_counts()) == before_stream
    with runtime.db.session() as session:
        denied = session.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.target, AuditLog.outcome).where(AuditLog.outcome != "ok")
        ).all()
    assert [tuple(r) for r in denied] == [("otto", "critical", task_id, "denied")]

    # The captured request itself was sound: from the admin's own session it goes through.
    sign_in(console, "admin")
    console.driver.get(console.server.url + "/tasks")
    console.wait_for_element("#tasks-grid", timeout=15)
    accepted = console.driver.execute_async_script(REPLAY, captured)
    assert accepted["status"] == 200 and "to 10 (Critical)" in accepted["body"], accepted
    assert task_row(runtime, task_id)["priority"] == 10
