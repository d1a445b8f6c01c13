"""Security, part 4: in a real headless Chromium. Stored XSS (task arguments, task errors, task
names, correlation ids, upgrade reasons and user names holding script and `javascript:`
payloads) rendered on every page executes nothing; every page works under the
Content-Security-Policy with no violation in the browser's console."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import NoAlertPresentException
from sqlalchemy import update

from core.auth import user_admin
from core.auth.passwords import hash_password
from core.errors import InvalidInput
from core.priority import Bucket
from dashboard.app import PAGES
from db.models import Task, User, utcnow
from tests.support.constants import PASSWORD
from tests.support.harness import Recorder
from tests.test_browser import sign_in, sign_in_as

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

# Each would set window.__xss or open an alert if it ran; each is at most 64 characters (the
# longest a user name or correlation id may be).
PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    '"><svg onload=window.__xss=3>',
    "'><img src=x onerror=alert(4)>",
    "javascript:window.__xss=5",
    '<a href="javascript:alert(6)">x</a>',
    "</pre><script>alert(7)</script>",
    "<details open ontoggle=alert(8)>",
    '" onmouseover="window.__xss=9" x="',
    '<iframe srcdoc="<script>parent.__xss=10</script>">',
]
EVIL_USER = '<img src=x onerror="window.__xss=11">'

CHECK_DOM = """
const bad = [];
if (window.__xss !== undefined) bad.push('window.__xss=' + window.__xss);
if (document.querySelector('[onerror],[onload],[ontoggle],[onmouseover],[srcdoc]')) bad.push('event attribute');
if (document.querySelector('img[src="x"], iframe, svg[onload], details[ontoggle]')) bad.push('injected element');
for (const s of document.scripts) { if (s.text.includes('__xss') || s.text.includes('alert(')) bad.push('script'); }
for (const a of document.querySelectorAll('a[href]')) {
    if (a.href.trim().toLowerCase().startsWith('javascript:')) bad.push('javascript: link ' + a.outerHTML);
}
return bad;
"""


def _no_alert(duo, where: str) -> None:
    try:
        alert = duo.driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"{where}: an alert opened: {text!r}")


def _console_errors(duo) -> list[str]:
    return [entry["message"] for entry in duo.driver.get_log("browser") if entry["level"] == "SEVERE"]


def _judge(duo, where: str) -> None:
    _no_alert(duo, where)
    assert duo.driver.execute_script(CHECK_DOM) == [], where
    errors = _console_errors(duo)
    assert not [e for e in errors if "Content Security Policy" in e or "Refused to" in e], (where, errors)


def _plant(runtime, start_worker) -> dict:
    """Payloads stored the ways they really arrive: dispatch arguments and correlation ids, a
    task's own error, an upgrade's reason; a task name and a user name written straight to the
    database (the console refuses such user names, but a database may hold anything)."""
    planted = {}
    args = {f"p{i}": p for i, p in enumerate(PAYLOADS)} | {PAYLOADS[1]: PAYLOADS[0]}
    planted["args"] = runtime.service.dispatch_task("demo.echo", args=args, priority=1, correlation_id=PAYLOADS[2])
    sibling = runtime.service.dispatch_task("demo.echo", priority=1, correlation_id=PAYLOADS[2])
    runtime.service.upgrade_task(sibling, "prioritize", PAYLOADS[3] + " " + PAYLOADS[6], "ada")
    failing = runtime.service.dispatch_task("demo.fail", args={"message": " ".join(PAYLOADS)}, priority=9,
                                            max_attempts=1)  # fmt: skip
    recorder = Recorder()
    start_worker(recorder, buckets=(Bucket.HIGH,))  # runs the failing task; the low ones stay queued
    recorder.wait_for(lambda: failing in recorder.of("failed"), timeout=30)
    planted["error"] = failing
    named = runtime.service.dispatch_task("demo.echo", priority=0)
    with runtime.db.session(write=True) as session:
        session.execute(update(Task).where(Task.id == named).values(name=PAYLOADS[7]))
        now = utcnow()
        session.add(User(username=EVIL_USER, password_hash=hash_password(PASSWORD), role="admin", active=True,
                         session_version=1, created_at=now, updated_at=now))  # fmt: skip
    planted["named"] = named
    runtime.service.upgrade_task(named, "critical", PAYLOADS[8], EVIL_USER)
    planted["sibling"] = sibling
    return planted


def test_sec050_stored_script_payloads_execute_on_no_page(console, runtime, start_worker):
    with pytest.raises(InvalidInput):
        user_admin.create_user(runtime.db, "ada", PAYLOADS[0], PASSWORD, "viewer")
    planted = _plant(runtime, start_worker)
    assert runtime.service.describe_task(planted["error"])["status"] == "failed"
    sign_in_as(console, EVIL_USER, "admin")  # the name shows in the navbar of every page
    base = console.server.url
    pages = [(p.PATH, p.TITLE) for p in PAGES if p.PATH != "/tasks/"]
    pages += [(f"/tasks/{planted[k]}", k) for k in ("args", "error", "named", "sibling")]
    pages += [("/tasks/" + PAYLOADS[0], "unknown task"), ("/" + PAYLOADS[4], "unknown page")]
    visited = 0
    for path, title in pages:
        console.driver.get(base + path)
        console.wait_for_element("#whoami", timeout=15)
        if path == "/tasks":
            console.wait_for_element(f"a.task-link[data-task-id='{planted['named']}']", timeout=15)
            console.wait_for_contains_text("#tasks-grid", PAYLOADS[7], timeout=15)
        elif path == "/history":
            console.wait_for_contains_text("#history-table", PAYLOADS[8], timeout=20)
            console.wait_for_element("#history-by-user .main-svg", timeout=20)
        elif path == "/users":
            console.wait_for_element("#users-table", timeout=15)
            assert EVIL_USER in console.find_element("#users-table").text
        elif path.startswith("/tasks/") and title in planted:
            console.wait_for_element("#task-name", timeout=15)
            assert PAYLOADS[2] in console.find_element("#page").text or title in ("error", "named")
            if title == "args":
                assert PAYLOADS[0] in console.find_element("#task-args").text
            if title == "error":
                assert PAYLOADS[6] in console.find_element("#task-error").text
            if title == "sibling":
                assert PAYLOADS[3] in console.find_element("#task-history").text
        elif path == "/":
            console.wait_for_element("#overview-cards .metric-card", timeout=15)
        elif title == "unknown task":
            console.wait_for_element("#task-not-found", timeout=15)
        else:
            console.wait_for_element("#page h1, #page h2", timeout=15)
        assert EVIL_USER in console.find_element("#whoami").text
        _judge(console, path)
        visited += 1
    # The grid's action buttons and links, hovered and clicked where a payload sits, still run nothing.
    console.driver.get(base + "/tasks")
    console.wait_for_element(f"a.task-link[data-task-id='{planted['named']}']", timeout=15).click()
    console.wait_for_element("#task-name", timeout=15)
    _judge(console, "after clicking a task link")
    print(f"\nsec050 XSS: {len(PAYLOADS) + 1} payloads x {visited} pages, nothing ran")


def test_sec051_every_page_works_under_the_csp_without_violations(console, runtime):
    task_id = runtime.service.dispatch_task("demo.echo", args={"n": 1}, priority=2)
    runtime.service.upgrade_task(task_id, "urgent", "for the chart", "ada")
    sign_in(console, "admin")
    base = console.server.url
    console.driver.get_log("browser")  # start from a clean console
    checks = {
        "/": "#overview-throughput .main-svg",
        "/tasks": f"a.task-link[data-task-id='{task_id}']",
        f"/tasks/{task_id}": "#task-history",
        "/history": "#history-over-time .main-svg",
        "/users": "#users-table",
    }
    for page in PAGES:
        if page.PATH not in checks and page.PATH != "/tasks/":
            checks[page.PATH] = "#page > div"
    for path, selector in checks.items():
        console.driver.get(base + path)
        console.wait_for_element(selector, timeout=20)
        console.wait_for_element("#whoami", timeout=15)
        errors = _console_errors(console)
        assert errors == [], (path, errors)
    # The clientside callbacks (hashed inline scripts) ran: changing a filter refreshes the grid.
    console.driver.get(base + "/tasks")
    console.wait_for_element(f"a.task-link[data-task-id='{task_id}']", timeout=15)
    console.find_element("#tasks-filter-text").send_keys("no-such-task\n")
    console.wait_for_contains_text("#tasks-count", "0 matching", timeout=15)
    assert _console_errors(console) == []
    # The check is real: an inline script the policy does not list is refused and reported.
    console.driver.execute_script(
        "const s = document.createElement('script'); s.text = 'window.__inline = 1'; document.body.appendChild(s);"
    )
    assert console.driver.execute_script("return window.__inline") is None
    assert any("Content Security Policy" in e for e in _console_errors(console))
