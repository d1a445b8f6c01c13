"""The console in a real headless Chromium (dash[testing]), signed in through the form."""

from __future__ import annotations

import pytest

from dashboard.app import create_app
from tests.conftest import PASSWORD, ROLE_USERS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture
def console(dash_duo, settings, runtime):
    app = create_app(settings, runtime)
    dash_duo.start_server(app, navigate=False)
    return dash_duo


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
    console.wait_for_contains_text("#task-action-result", failed, timeout=15)
    assert task_row(runtime, critical)["priority"] == 10
    retried = task_row(runtime, failed)
    assert (retried["status"], retried["priority"], retried["generation"]) == ("queued", 3, 2)
