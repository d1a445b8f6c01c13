"""The console as its people see it, in a real headless Chromium: honest about its state, live,
readable, safe to click, reachable by keyboard and screen reader (axe-core), and a first run
that shows what it is for.

Each test names the complaint it answers (the issue "A console operators can trust at a glance").
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from sqlalchemy import select, update

from core.auth import tokens as api_tokens
from core.auth import user_admin
from core.tasks.rows import DispatchRequest
from db.models import AuditLog, Task, User
from tests.support import accessibility
from tests.support.constants import PASSWORD, ROLE_USERS
from tests.support.harness import Recorder, free_port, settings_env, wait_until
from tests.test_browser import sign_in, sign_in_as

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CLOCK = r"\d\d:\d\d:\d\d"
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture
def app_client_factory(settings, runtime):
    """Another browser: a signed-in HTTP client of its own app on the same database."""
    from dashboard.app import create_app
    from tests.support.forge import sign_in as form_sign_in

    app = create_app(settings, runtime)

    def make(username: str, password: str = PASSWORD):
        client = app.server.test_client()
        assert form_sign_in(client, username, password).status_code == 302
        return client

    return make


def go(duo, path: str) -> None:
    duo.driver.get(duo.server.url + path)


def script(duo, source: str, *args):
    return duo.driver.execute_script(source, *args)


def style_of(duo, selector: str, prop: str) -> str:
    return script(duo, "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]];", selector, prop)


def text_of(duo, selector: str) -> str:
    """The element's text ("" while the page is being drawn again)."""
    try:
        elements = duo.find_elements(selector)
        return elements[0].text if elements else ""
    except StaleElementReferenceException:
        return ""


def click_live(duo, selector: str, timeout: float = 10) -> None:
    """Click an element of a part of the page that redraws itself every refresh: a click that
    lands between two draws finds its element gone, and is made again on the new one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            duo.find_element(selector).click()
            return
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_text(duo, selector: str, pattern: str, timeout: float = 15) -> str:
    """The element's text once it matches the pattern."""
    deadline = time.monotonic() + timeout
    while True:
        text = text_of(duo, selector)
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} never matched {pattern!r}; it says {text!r}")
        time.sleep(0.2)


def severe_logs(duo) -> list[str]:
    return [entry["message"] for entry in duo.get_logs() or []]


def capture_console_warnings(duo) -> None:
    """From the next page load on, keep what the page writes to console.warn / console.error."""
    duo.driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__console = [];"
            "['warn', 'error'].forEach(function (level) { var original = console[level];"
            " console[level] = function () { window.__console.push(level + ': ' + Array.prototype.map.call("
            " arguments, function (a) { try { return typeof a === 'string' ? a : JSON.stringify(a); }"
            " catch (e) { return String(a); } }).join(' ')); return original.apply(console, arguments); }; });"
        },
    )


def console_messages(duo) -> list[str]:
    return script(duo, "return window.__console || [];")


def grid_rows(duo) -> list[str]:
    """The task ids of the grid's rendered rows, top to bottom."""
    return script(
        duo,
        "return Array.from(document.querySelectorAll('#tasks-grid .ag-center-cols-container .ag-row'))"
        ".sort(function (a, b) { return +a.getAttribute('row-index') - +b.getAttribute('row-index'); })"
        ".map(function (r) { return r.getAttribute('row-id'); });",
    )


def visible_columns(duo) -> list[str]:
    """The grid's columns whose header is wholly in view: in the scrolling part's visible width
    (not under the pinned actions column), or pinned."""
    return script(
        duo,
        """var view = document.querySelector('#tasks-grid .ag-header-viewport').getBoundingClientRect();
        var seen = Array.from(document.querySelectorAll('#tasks-grid .ag-header-viewport .ag-header-cell'))
            .filter(function (h) {
                var r = h.getBoundingClientRect();
                return r.width > 0 && r.left >= view.left - 1 && r.right <= view.right + 1;
            });
        var pinned = Array.from(document.querySelectorAll('#tasks-grid .ag-pinned-right-header .ag-header-cell'));
        return seen.concat(pinned).map(function (h) { return h.getAttribute('col-id'); });""",
    )


def dialog_open(duo, prefix: str) -> None:
    """Wait for the confirmation dialog whose buttons are {prefix}-confirm and {prefix}-close."""
    wait_until(
        lambda: script(
            duo, "var b = document.querySelector('.modal.show #' + arguments[0]); return !!b;", f"{prefix}-confirm"
        ),
        timeout=10,
        message=f"the {prefix} dialog",
    )
    time.sleep(0.3)  # the fade-in


def dialog_closed(duo, prefix: str) -> None:
    wait_until(
        lambda: (
            not script(duo, "return !!document.querySelector('.modal.show #' + arguments[0]);", f"{prefix}-confirm")
        ),
        timeout=10,
        message=f"the {prefix} dialog to close",
    )


def dispatch(runtime, name="demo.echo", **options) -> str:
    return runtime.service.dispatch_task(name, **options)


def age_task(runtime, task_id: str, minutes: float) -> None:
    """Make a queued task look as if it had waited this long."""
    then = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    with runtime.db.session(write=True) as s:
        s.execute(update(Task).where(Task.id == task_id).values(queued_at=then, created_at=then))


# -- honest state --------------------------------------------------------------------------------


def test_ux001_a_session_ended_elsewhere_says_so_and_offers_sign_in(console, runtime):
    dispatch(runtime, priority=9)
    sign_in(console, "manager")
    wait_text(console, "#overview-updated", rf"^Updated {CLOCK}$")
    user_admin.change_role(runtime.db, ROLE_USERS["admin"], ROLE_USERS["manager"], "operator")
    banner = wait_text(console, "#connection-banner", "Your session has ended", timeout=10)
    assert "Sign in again" in banner
    link = console.find_element("#connection-banner a")
    assert link.get_attribute("href").endswith("/login?next=%2F")
    console.find_element("#nav-tasks").click()  # the URL changes; the banner still says why nothing does
    time.sleep(2.5)
    assert console.find_element("#connection-banner").is_displayed()
    assert not [m for m in severe_logs(console) if "body stream already read" in m or "Failed to execute" in m]
    link.click()
    console.wait_for_element("#login-button")
    console.find_element("#username").send_keys(ROLE_USERS["manager"])
    console.find_element("#password").send_keys(PASSWORD)
    console.find_element("#login-button").click()
    console.wait_for_text_to_equal("#whoami", f"{ROLE_USERS['manager']} · operator")


def test_ux002_server_stopped_connection_lost_banner_then_recovers_by_itself(dash_duo, settings, runtime, tmp_path):
    """A real console process, stopped and started again on the same port."""
    import subprocess
    import sys

    import requests

    from tests.support.constants import ROOT

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = settings_env(settings, SWITCHYARD_SECRET_KEY="k" * 48)

    def start() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "web.log", "ab"),  # noqa: SIM115 - closed with the process
        )

        def ready() -> bool:
            try:
                return requests.get(f"{base}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=60, message="console ready")
        return process

    web = start()
    try:
        dash_duo.driver.set_window_size(1400, 1000)
        dash_duo.driver.get(f"{base}/login")
        dash_duo.find_element("#username").send_keys(ROLE_USERS["viewer"])
        dash_duo.find_element("#password").send_keys(PASSWORD)
        dash_duo.find_element("#login-button").click()
        wait_text(dash_duo, "#overview-updated", rf"^Updated {CLOCK}$", timeout=20)
        web.terminate()
        web.wait(30)
        banner = wait_text(dash_duo, "#connection-banner", "Connection lost", timeout=15)
        last = text_of(dash_duo, "#overview-updated").removeprefix("Updated ")
        assert re.search(rf"Connection lost, last updated {CLOCK}\.", banner) and last in banner
        web = start()
        wait_until(lambda: not dash_duo.find_element("#connection-banner").is_displayed(), timeout=20)
        wait_until(lambda: text_of(dash_duo, "#overview-updated") != f"Updated {last}", timeout=10)
    finally:
        web.terminate()
        web.wait(30)


def test_ux003_wait_alarms_show_and_overview_links_to_filtered_tasks(console, runtime):
    late = dispatch(runtime, priority=5)
    age_task(runtime, late, 11)
    warned = dispatch(runtime, priority=1, category="report")
    age_task(runtime, warned, 2)
    sign_in(console, "operator")
    console.wait_for_element("#queue-matrix td.age-alarm", timeout=15)
    alarm = style_of(console, "#queue-matrix td.age-alarm", "backgroundColor")
    warn = style_of(console, "#queue-matrix td.age-warn", "backgroundColor")
    plain = style_of(console, "#queue-matrix tbody th", "backgroundColor")
    assert alarm == "rgb(241, 174, 181)" and warn == "rgb(255, 230, 156)", (alarm, warn)
    assert plain not in (alarm, warn)
    wait_text(console, "#queue-matrix td.age-alarm", "waiting 11 min")  # "" while the matrix is redrawn
    wait_text(console, "#overview-updated", rf"^Updated {CLOCK}$")

    click_live(console, "#queue-matrix td.age-alarm a")
    wait_until(lambda: "/tasks?" in console.driver.current_url, timeout=10)
    url = urlparse(console.driver.current_url)
    assert url.path == "/tasks"
    assert parse_qs(url.query) == {
        "status": ["queued"],
        "category": ["webapp"],
        "phase": ["default"],
        "bucket": ["normal"],
    }
    wait_until(lambda: grid_rows(console) == [late], timeout=15, message="the filtered grid")
    console.driver.refresh()  # the filters live in the URL: a reload (or a shared link) keeps them
    wait_until(lambda: grid_rows(console) == [late], timeout=15, message="the grid after a reload")
    assert "normal" in text_of(console, "#tasks-filters") and "queued" in text_of(console, "#tasks-filters")

    go(console, "/")
    console.wait_for_element("#queued-low")
    click_live(console, "a.metric-link[href='/tasks?status=queued&bucket=low']")
    wait_until(lambda: grid_rows(console) == [warned], timeout=15, message="the low bucket")


# -- live grid and task page -----------------------------------------------------------------------


def test_ux004_grid_refreshes_itself_keeps_its_place_and_shows_new_tasks_as_a_pill(console, runtime):
    ids = runtime.service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=2) for n in range(60)])
    sign_in(console, "manager")
    go(console, "/tasks")
    wait_until(lambda: len(grid_rows(console)) > 10, timeout=15, message="rows")
    wait_text(console, "#tasks-updated", rf"^Updated {CLOCK}$")
    viewport = "#tasks-grid .ag-body-viewport"
    script(console, "document.querySelector(arguments[0]).scrollTop = 600;", viewport)
    time.sleep(0.5)
    before = grid_rows(console)
    scrolled = script(console, "return document.querySelector(arguments[0]).scrollTop;", viewport)
    assert scrolled > 0

    newer = runtime.service.dispatch_tasks([DispatchRequest("demo.echo", {}, priority=2) for _ in range(3)])
    pill = wait_text(console, "#tasks-new", r"^3 new tasks", timeout=10)
    assert "show" in pill.lower()
    assert grid_rows(console) == before  # nothing moved under the cursor
    assert script(console, "return document.querySelector(arguments[0]).scrollTop;", viewport) == scrolled

    # A change made elsewhere shows in place: the row's status, without a reload.
    console.find_element("#tasks-new").click()
    wait_until(lambda: set(grid_rows(console)[:3]) == set(newer), timeout=10, message="new rows on top")
    assert not console.find_element("#tasks-new").is_displayed()
    target = grid_rows(console)[4]
    runtime.service.cancel_task(target, ROLE_USERS["admin"], reason="duplicate")
    wait_until(
        lambda: (
            script(
                console,
                "var r = document.querySelector('#tasks-grid .ag-row[row-id=\"' + arguments[0] + '\"] .status-badge');"
                " return r && r.textContent;",
                target,
            )
            == "cancelled"
        ),
        timeout=10,
        message="the row's status refreshed",
    )

    # Acting on a row keeps the row where it was.
    victim = grid_rows(console)[6]
    assert victim in ids
    position = grid_rows(console).index(victim)
    console.wait_for_element(f"#action-cancel-{victim}").click()
    dialog_open(console, "reason")
    assert text_of(console, "#reason-modal-title") == "Cancel this task?"
    console.find_element("#reason-input").send_keys("wrong input file")
    console.find_element("#reason-confirm").click()
    wait_text(console, "#task-action-result", "cancelled", timeout=10)
    wait_until(lambda: grid_rows(console).index(victim) == position, timeout=5)
    with runtime.db.session() as s:
        entry = s.scalars(select(AuditLog).where(AuditLog.target == victim, AuditLog.action == "cancel")).one()
    assert (entry.actor, entry.detail, entry.outcome) == (ROLE_USERS["manager"], "wrong input file", "ok")


def test_ux005_task_page_is_live_and_shows_the_current_attempt_and_a_timeline(console, runtime, start_worker):
    failing = dispatch(runtime, "demo.fail", priority=3, max_attempts=1, args={"message": "upstream returned 503"})
    queued = dispatch(runtime, priority=2, category="report")  # the worker below takes webapp only
    runtime.service.upgrade_task(queued, "prioritize", "customer waiting", ROLE_USERS["operator"])
    recorder = Recorder()
    start_worker(recorder, categories=("webapp",))
    recorder.wait_for(lambda: failing in recorder.of("failed"), timeout=20)
    start_worker.stop_all()  # the retried task stays queued

    sign_in(console, "operator")
    go(console, f"/tasks/{queued}")
    console.wait_for_element("#task-detail-actions")
    wait_text(console, "#task-detail-updated", rf"^Updated {CLOCK}$")
    assert re.fullmatch(WHEN, text_of(console, "#task-created")), text_of(console, "#task-created")
    assert "T" not in text_of(console, "#task-summary").replace("Task", "")  # no raw ISO times
    assert text_of(console, "#task-requeued") == "1 time"
    assert "generation" not in text_of(console, "#task-detail-body").lower()
    timeline = text_of(console, "#task-timeline-events")
    assert "Dispatched" in timeline and "Upgraded 2 → 8" in timeline and "customer waiting" in timeline
    assert ROLE_USERS["operator"] in timeline
    runtime.service.cancel_task(queued, ROLE_USERS["admin"], reason="no longer needed")
    wait_text(console, "#task-status", "^cancelled$", timeout=10)
    assert console.find_elements("#task-detail-actions button") == []
    timeline = text_of(console, "#task-timeline-events")
    assert f"Cancelled · {ROLE_USERS['admin']}" in timeline and "no longer needed" in timeline

    go(console, f"/tasks/{failing}")
    wait_text(console, "#task-status", "^failed$")
    assert "upstream returned 503" in text_of(console, "#task-error")
    runtime.service.retry_task(failing, ROLE_USERS["manager"])
    wait_text(console, "#task-status", "^queued$", timeout=10)
    # The current attempt only: the old error and the old worker went to the timeline.
    assert console.find_elements("#task-error") == []
    assert text_of(console, "#task-worker") == "–" and text_of(console, "#task-attempts") == "0 of 1"
    timeline = text_of(console, "#task-timeline-events")
    assert "Attempt 1 failed" in timeline and "upstream returned 503" in timeline
    assert f"Retried · {ROLE_USERS['manager']}" in timeline
    assert console.find_element(".task-action.action-prioritize").is_displayed()


# -- readable ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1400, 900])
def test_ux006_grid_columns_fit_each_role(console, runtime, width):
    ids = [dispatch(runtime, priority=p) for p in (8, 5, 1)]
    runtime.service.dispatch_tasks([DispatchRequest("etl.extract", {}, priority=9)])
    console.driver.set_window_size(width, 1000)
    everything = {"id", "status", "priority", "name", "waiting", "created", "where", "bucket", "attempts"}
    wanted = everything if width >= 1400 else {"id", "status", "priority", "name"}
    for role in ("viewer", "operator", "admin"):
        sign_in(console, role)
        go(console, "/tasks")
        wait_until(lambda: len(grid_rows(console)) == 4, timeout=15, message="rows")
        shown: set[str] = set()

        def fits() -> bool:
            shown.clear()
            shown.update(visible_columns(console))
            return wanted <= shown

        wait_until(fits, timeout=5, message=f"{role} at {width}: {sorted(wanted)} in view, not {sorted(shown)}")
        cut = script(
            console,
            "return Array.from(document.querySelectorAll('#tasks-grid .ag-row .ag-cell'))"
            ".filter(function (c) { return c.scrollWidth > c.clientWidth + 1; })"
            ".map(function (c) { return c.getAttribute('col-id') + ': ' + c.textContent; });",
        )
        assert cut == [], (role, width, cut)  # nothing is cut short
        actions = console.find_elements("#tasks-grid .ag-header-cell[col-id='actions']")
        assert (len(actions) == 0) == (role == "viewer")
    # Badges, "8 Prioritize" in full, short ids that tell rows apart.
    badges = [b.text for b in console.find_elements("#tasks-grid .status-badge")]
    assert badges and set(badges) == {"queued"}
    priority_cell = f"#tasks-grid .ag-row[row-id='{ids[0]}'] .ag-cell[col-id='priority']"
    assert text_of(console, priority_cell) == "8 Prioritize"
    assert script(
        console,
        "var c = document.querySelector(arguments[0] + ' .ag-cell-value') || document.querySelector(arguments[0]);"
        " return c.scrollWidth <= c.clientWidth;",
        priority_cell,
    )
    shorts = [a.text for a in console.find_elements("#tasks-grid a.task-link")]
    assert len(set(shorts)) == len(shorts) == 4 and all(len(s) == 8 for s in shorts)


def test_ux007_search_matches_anywhere_in_the_id_and_lives_in_the_url(console, runtime):
    ids = [dispatch(runtime, priority=4) for _ in range(5)]
    sign_in(console, "viewer")
    go(console, "/tasks")
    wait_until(lambda: len(grid_rows(console)) == 5, timeout=15)
    search = console.find_element("#tasks-filter-text")
    assert search.get_attribute("aria-label") or console.find_elements("label[for='tasks-filter-text']")
    middle = ids[2][10:18]
    search.send_keys(middle + Keys.ENTER)
    wait_until(lambda: grid_rows(console) == [ids[2]], timeout=10, message="the id's middle")
    assert f"q={middle}" in console.driver.current_url
    search.clear()
    search.send_keys(ids[3][-6:] + Keys.ENTER)
    wait_until(lambda: grid_rows(console) == [ids[3]], timeout=10, message="the id's end")


def test_ux008_one_time_format_and_a_remembered_time_zone(console, runtime):
    task_id = dispatch(runtime, priority=5)
    runtime.service.upgrade_task(task_id, "prioritize", "late", ROLE_USERS["operator"])
    console.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Tokyo"})
    sign_in(console, "manager")
    go(console, f"/tasks/{task_id}")
    utc_created = wait_text(console, "#task-created", WHEN)
    go(console, "/account")
    console.wait_for_element("#account-zone")
    console.find_element("label[for='_dbcprivate_radioitems_account-zone_input_browser']").click()
    console.find_element("#account-zone-save").click()
    wait_text(console, "#account-result", "Asia/Tokyo")
    wait_text(console, "#account-zone-now", "Asia/Tokyo", timeout=10)  # the page reloads itself
    sign_in(console, "manager")  # remembered: a new session shows the same zone
    go(console, f"/tasks/{task_id}")
    tokyo_created = wait_text(console, "#task-created", WHEN)
    shift = datetime.fromisoformat(tokyo_created) - datetime.fromisoformat(utc_created)
    assert shift == timedelta(hours=9)
    assert re.search(WHEN, text_of(console, "#task-history"))
    for path, selector in (("/tasks", "#tasks-grid .ag-cell[col-id='created']"), ("/history", "#history-table")):
        go(console, path)
        console.wait_for_element(selector, timeout=15)
        wait_until(lambda selector=selector: re.search(WHEN, text_of(console, selector)), timeout=15)
    go(console, "/tasks")
    wait_text(console, "#tasks-grid .ag-row .ag-cell[col-id='created']", WHEN)
    waiting = text_of(console, "#tasks-grid .ag-row .ag-cell[col-id='waiting']")
    assert re.fullmatch(r"\d+ (s|min)", waiting), waiting


def test_ux009_history_counts_are_whole_the_heatmap_reads_right_and_rows_link(console, runtime):
    ids = [dispatch(runtime, priority=2, category=c) for c in ("etl", "report", "webapp", "webapp")]
    runtime.service.upgrade_task(ids[0], "prioritize", "one", ROLE_USERS["operator"])
    runtime.service.upgrade_task(ids[1], "urgent", "two", ROLE_USERS["manager"])
    runtime.service.cancel_task(ids[2], ROLE_USERS["manager"], reason="not needed")
    sign_in(console, "manager")
    go(console, "/history")
    console.wait_for_element("#history-over-time .main-svg", timeout=20)
    wait_until(lambda: "3 changes match" in text_of(console, "#history-summary"), timeout=15)
    for graph in ("history-over-time", "history-by-user"):
        ticks = script(
            console,
            "return Array.from(document.querySelectorAll('#' + arguments[0] + ' .ytick text, #' + arguments[0]"
            " + ' .xtick text')).map(function (t) { return t.textContent; });",
            graph,
        )
        numbers = [t for t in ticks if re.fullmatch(r"[\d.,]+", t)]
        assert numbers and not [t for t in numbers if "." in t], (graph, ticks)
    heat = script(
        console,
        "var d = document.querySelector('#history-by-category .js-plotly-plot')._fullData[0];"
        " return {zmin: d.zmin, scale: d.colorscale, z: d.z};",
    )
    assert heat["zmin"] == 0
    lightest, darkest = heat["scale"][0][1], heat["scale"][-1][1]
    assert brightness(lightest) > 0.9 > 0.3 > brightness(darkest), heat["scale"]
    legend = script(
        console,
        "return Array.from(document.querySelectorAll('#history-over-time .legendtext')).map(function (t) {"
        " return t.textContent; });",
    )
    assert set(legend) == {"prioritize", "urgent", "cancel"}
    table = text_of(console, "#history-table")
    assert re.search(WHEN, table) and "T0" not in table and "+00:00" not in table
    assert "not needed" in table
    link = console.find_element(f"#history-table a.task-link[data-task-id='{ids[2]}']")
    assert link.get_attribute("href").endswith(f"/tasks/{ids[2]}") and link.text == ids[2][-8:]
    script(console, "arguments[0].click();", link)
    wait_text(console, "#task-status", "^cancelled$", timeout=10)


def brightness(color: str) -> float:
    """0 (black) to 1 (white), from '#rrggbb' or 'rgb(r, g, b)'."""
    if color.startswith("#"):
        parts = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    else:
        parts = [int(float(p)) for p in re.findall(r"[\d.]+", color)[:3]]
    return sum(parts) / (3 * 255)


# -- safe actions -------------------------------------------------------------------------------------


def test_ux010_every_destructive_action_asks_first(console, runtime):
    failed = dispatch(runtime, priority=3)
    with runtime.db.session(write=True) as s:
        s.execute(update(Task).where(Task.id == failed).values(status="failed", error="boom", attempts=3))
    queued = dispatch(runtime, priority=3)
    sign_in(console, "admin")
    go(console, "/tasks")
    # Retry: a confirmation, no reason box.
    console.wait_for_element(f"#action-retry-{failed}").click()
    dialog_open(console, "reason")
    assert text_of(console, "#reason-modal-title") == "Retry this task?"
    assert not console.find_element("#reason-input").is_displayed()
    assert [b.text for b in console.find_elements("#reason-modal .modal-footer button")] == [
        "Close",
        "Retry task",
    ]
    console.find_element("#reason-close").click()
    dialog_closed(console, "reason")
    assert runtime.service.describe_task(failed)["status"] == "failed"
    # Cancel: "Cancel task" on the row, an optional reason, "Close" dismisses.
    button = console.wait_for_element(f"#action-cancel-{queued}")
    assert button.text == "Cancel task"
    button.click()
    dialog_open(console, "reason")
    assert console.find_element("#reason-input").is_displayed()
    assert "optional" in text_of(console, "#reason-label").lower()
    console.find_element("#reason-confirm").click()  # no reason: still fine
    wait_text(console, "#task-action-result", "cancelled")
    assert runtime.service.describe_task(queued)["status"] == "cancelled"

    # Disable a user.
    go(console, "/users")
    console.wait_for_element("#target-user")
    console.find_element("#target-user").send_keys(ROLE_USERS["viewer"])
    wait_until(lambda: console.find_element("#toggle-active").is_enabled(), timeout=5)
    console.find_element("#toggle-active").click()
    dialog_open(console, "disable")
    assert ROLE_USERS["viewer"] in text_of(console, "#disable-modal-text")
    console.find_element("#disable-close").click()
    dialog_closed(console, "disable")
    assert user_active(runtime, ROLE_USERS["viewer"])
    console.find_element("#toggle-active").click()
    dialog_open(console, "disable")
    console.find_element("#disable-confirm").click()
    wait_text(console, "#users-result", "disabled and signed out")
    assert not user_active(runtime, ROLE_USERS["viewer"])

    # Revoke a token.
    new = api_tokens.system_create_token(runtime.db, ROLE_USERS["admin"], "nightly")
    go(console, "/tokens")
    console.wait_for_element("#token-target")
    console.find_element("#token-target").send_keys(new.info.prefix)
    console.find_element("#revoke-token").click()
    dialog_open(console, "revoke")
    assert new.info.prefix in text_of(console, "#revoke-modal-text")
    console.find_element("#revoke-close").click()
    dialog_closed(console, "revoke")
    assert api_tokens.system_list_tokens(runtime.db, ROLE_USERS["admin"])[0].active
    console.find_element("#revoke-token").click()
    dialog_open(console, "revoke")
    console.find_element("#revoke-confirm").click()
    wait_text(console, "#tokens-result", "Revoked")
    assert not api_tokens.system_list_tokens(runtime.db, ROLE_USERS["admin"])[0].active


def user_active(runtime, username: str) -> bool:
    with runtime.db.session() as s:
        return bool(s.scalar(select(User.active).where(User.username == username)))


# -- keyboard and screen reader -----------------------------------------------------------------------


def focused(duo) -> dict:
    return script(
        duo,
        "var e = document.activeElement; var s = getComputedStyle(e);"
        " return {id: e.id, tag: e.tagName, cls: e.className, col: e.getAttribute('col-id'),"
        " text: e.textContent, outline: s.outlineStyle + ' ' + s.outlineWidth,"
        " border: s.borderTopStyle + ' ' + s.borderTopWidth,"
        " inGrid: !!e.closest('#tasks-grid .ag-center-cols-container, #tasks-grid .ag-pinned-right-cols-container')};",
    )


def press(duo, *keys) -> None:
    ActionChains(duo.driver).send_keys(*keys).perform()


def ctrl_enter(duo) -> None:
    ActionChains(duo.driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()


def test_ux011_keyboard_reaches_rows_and_actions_and_drives_the_dialog(console, runtime):
    task_id = dispatch(runtime, priority=3)
    sign_in(console, "operator")
    go(console, "/tasks")
    wait_until(lambda: grid_rows(console) == [task_id], timeout=15)
    console.find_element("#tasks-filter-text").click()
    for _ in range(20):  # Tab on until a grid cell has focus: the header does not trap it
        press(console, Keys.TAB)
        if focused(console)["inGrid"]:
            break
    cell = focused(console)
    assert cell["inGrid"], cell
    assert "solid" in cell["border"] or "solid" in cell["outline"], cell  # a visible focus
    # Along the row to its actions, Enter puts focus on the first button.
    for _ in range(12):
        if focused(console)["col"] == "actions":
            break
        press(console, Keys.ARROW_RIGHT)
    assert focused(console)["col"] == "actions"
    press(console, Keys.ENTER)
    button = focused(console)
    assert button["tag"] == "BUTTON" and button["text"] == "Prioritize", button
    assert "solid" in button["outline"], button
    press(console, Keys.ENTER)
    dialog_open(console, "reason")
    wait_until(lambda: focused(console)["id"] == "reason-input", timeout=5, message="the reason box has focus")
    # Ctrl+Enter with no reason: the refusal shows inside the dialog, in front of its backdrop.
    ctrl_enter(console)
    feedback = console.wait_for_element(".modal.show #reason-feedback .alert")
    assert feedback.text == "An upgrade needs a reason."
    assert script(
        console,
        "var r = arguments[0].getBoundingClientRect();"
        " var top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
        " return arguments[0].contains(top);",
        feedback,
    )
    console.find_element("#reason-input").send_keys("customer waiting")
    ctrl_enter(console)
    wait_text(console, "#task-action-result", "raised from 3")
    assert runtime.service.describe_task(task_id)["priority"] == 8
    # Esc closes the dialog and changes nothing.
    other = dispatch(runtime, priority=1)
    wait_text(console, "#tasks-new", "^1 new task")
    console.find_element("#tasks-new").click()
    console.wait_for_element(f"#action-prioritize-{other}").click()
    dialog_open(console, "reason")
    press(console, Keys.ESCAPE)
    dialog_closed(console, "reason")
    assert runtime.service.describe_task(other)["priority"] == 1
    # Enter on a row's cell opens the task.
    console.find_element(f"#tasks-grid .ag-row[row-id='{other}'] .ag-cell[col-id='name']").click()
    press(console, Keys.ENTER)
    wait_until(lambda: console.driver.current_url.endswith(f"/tasks/{other}"), timeout=10)
    console.wait_for_element("#task-status")


def test_ux012_forms_submit_with_enter(console, runtime):
    sign_in(console, "admin")
    go(console, "/users")
    console.wait_for_element("#new-username").send_keys("erin")
    console.find_element("#new-password").send_keys(PASSWORD + Keys.ENTER)
    wait_text(console, "#users-result", r"Created erin \(viewer\)")
    console.find_element("#target-user").send_keys("erin")
    console.find_element("#reset-password-input").send_keys("another long password" + Keys.ENTER)
    wait_text(console, "#users-result", "New password set for erin")
    go(console, "/tokens")
    console.wait_for_element("#token-name").send_keys("nightly-etl" + Keys.ENTER)
    wait_text(console, "#tokens-result", "Created token 'nightly-etl'")


PAGES = {
    "viewer": ["/", "/tasks", "/tasks/{task}", "/account", "/tokens"],
    "operator": ["/", "/tasks", "/tasks/{task}", "/account", "/tokens"],
    "manager": ["/", "/tasks", "/tasks/{failed}", "/history", "/account", "/tokens"],
    "admin": ["/", "/tasks", "/tasks/{task}", "/history", "/users", "/account", "/tokens"],
}
READY = {
    "/": "#queue-matrix",
    "/tasks": "#tasks-grid .ag-row",
    "/history": "#history-over-time .main-svg",
    "/users": "#users-table",
    "/account": "#account-sessions table",
    "/tokens": "#tokens-table",
}


def test_ux013_every_page_for_every_role_passes_axe_and_warns_of_nothing(console, runtime):
    """axe-core (vendored) on every page as every role, with the reason dialog open once: no
    serious or critical violation. And the browser console stays clean (no AG Grid warning)."""
    task = dispatch(runtime, priority=5)
    failed = dispatch(runtime, priority=2)
    with runtime.db.session(write=True) as s:
        s.execute(update(Task).where(Task.id == failed).values(status="failed", error="boom", attempts=3))
    runtime.service.upgrade_task(task, "prioritize", "why not", ROLE_USERS["operator"])
    capture_console_warnings(console)
    found: dict[str, str] = {}
    for role, paths in PAGES.items():
        sign_in(console, role)
        assert script(console, "return document.documentElement.lang;") == "en"
        for template in paths:
            path = template.format(task=task, failed=failed)
            go(console, path)
            console.wait_for_element(READY.get(path, "#task-timeline-events"), timeout=20)
            time.sleep(0.5)
            problems = accessibility.violations(console.driver)
            if problems:
                found[f"{role} {path}"] = accessibility.describe(problems)
            messages = [m for m in console_messages(console) if "axe" not in m.lower()]
            if messages:
                found[f"{role} {path} console"] = "\n".join(messages)
    sign_in(console, "operator")
    go(console, "/tasks")
    console.wait_for_element(f"#action-retry-{failed}", timeout=15).click()
    dialog_open(console, "reason")
    problems = accessibility.violations(console.driver)
    if problems:
        found["operator dialog"] = accessibility.describe(problems)
    assert not found, "\n\n".join(f"== {k}\n{v}" for k, v in found.items())


def test_ux014_login_keeps_the_user_name_after_a_wrong_password(console):
    console.driver.delete_all_cookies()
    go(console, "/login")
    console.find_element("#username").send_keys(ROLE_USERS["operator"])
    console.find_element("#password").send_keys("not the password" + Keys.ENTER)
    console.wait_for_element(".alert-danger")
    assert console.find_element("#username").get_attribute("value") == ROLE_USERS["operator"]
    assert focused(console)["id"] == "password"
    assert accessibility.violations(console.driver) == []
    console.find_element("#password").send_keys(PASSWORD + Keys.ENTER)
    console.wait_for_text_to_equal("#whoami", f"{ROLE_USERS['operator']} · operator")


def test_ux015_my_account_changes_the_password_and_ends_other_sessions(console, runtime, app_client_factory):
    other = app_client_factory(ROLE_USERS["operator"])  # another browser, signed in as the same user
    sign_in(console, "operator")
    go(console, "/account")
    wait_until(lambda: len(console.find_elements("#account-sessions tbody tr")) == 2, timeout=10)
    assert "this browser" in text_of(console, "#account-sessions")
    console.find_element("#account-current").send_keys("wrong password")
    console.find_element("#account-new").send_keys("a brand new password")
    console.find_element("#account-repeat").send_keys("a brand new password" + Keys.ENTER)
    wait_text(console, "#account-result", "current password")
    console.find_element("#account-current").send_keys(PASSWORD)
    console.find_element("#account-new").send_keys("a brand new password")
    console.find_element("#account-repeat").send_keys("a brand new password" + Keys.ENTER)
    wait_text(console, "#account-result", "Password changed")
    assert other.get("/_dash-layout").status_code == 401  # the other session ended; this one did not
    wait_until(lambda: len(console.find_elements("#account-sessions tbody tr")) == 1, timeout=10)
    sign_in_as(console, ROLE_USERS["operator"], "operator", password="a brand new password")
    third = app_client_factory(ROLE_USERS["operator"], password="a brand new password")
    go(console, "/account")
    # This browser's first session (its cookie is gone, the session is not), this one, the third.
    wait_until(lambda: len(console.find_elements("#account-sessions tbody tr")) == 3, timeout=10)
    console.find_element("#account-sign-out-others").click()
    wait_text(console, "#account-result", "2 other session")
    assert third.get("/_dash-layout").status_code == 401
    wait_until(lambda: len(console.find_elements("#account-sessions tbody tr")) == 1, timeout=10)
    go(console, "/account")  # this one still works
    console.wait_for_text_to_equal("#whoami", f"{ROLE_USERS['operator']} · operator")
