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
