"""Health, readiness, metrics, structured logs, and several web processes on one database and NATS."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from core.broker.embedded import NatsServer, free_port, port_open
from core.runtime import Runtime, prepare_database
from core.tasks.rows import DispatchRequest
from dashboard.app import create_app
from db.engine import Database
from tests.support.constants import PASSWORD, ROLE_USERS, ROOT
from tests.support.harness import settings_env, spawn_worker, wait_until
from tests.test_console_auth import overview_request

pytestmark = pytest.mark.timeout(180)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        have = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if sample == name and have == wanted:
            return float(value)
    return 0.0


@pytest.fixture
def app(settings, runtime):
    return create_app(settings, runtime)


def test_ops001_healthz_and_readyz_are_open_cheap_and_say_nothing_about_tasks(app, runtime):
    runtime.service.dispatch_task("demo.echo", args={"secret": "do not show"}, priority=3)
    client = app.server.test_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "database": "ok", "schema": "ok", "broker": "ok"}
    for response in (health, ready):
        assert "secret" not in response.get_data(as_text=True) and response.headers["X-Request-ID"]


def test_ops002_readyz_says_which_part_is_down(tmp_path, settings):
    server = NatsServer(tmp_path / "own-nats", sync_always=False).start()
    own = replace(settings, nats_url=server.url)
    runtime = Runtime.open(own, require_broker=True)
    try:
        client = create_app(own, runtime).server.test_client()
        assert client.get("/readyz").status_code == 200
        server.stop()
        wait_until(lambda: not runtime.broker.broker.connected, timeout=20, message="broker connection lost")
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.get_json() == {"status": "unavailable", "database": "ok", "schema": "ok", "broker": "unavailable"}
        server.start()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, message="ready again")
    finally:
        runtime.close()
        server.stop()


def test_ops003_readyz_reports_an_unreachable_database(tmp_path, settings):
    path = tmp_path / "gone.db"
    own = replace(settings, database_url=f"sqlite:///{path}")
    fresh = Database(own.database_url)
    prepare_database(fresh)
    fresh.dispose()
    runtime = Runtime.open(own, require_broker=True)
    try:
        client = create_app(own, runtime).server.test_client()
        assert client.get("/readyz").status_code == 200
        for leftover in tmp_path.glob("gone.db*"):
            leftover.unlink()
        path.mkdir()  # a directory where the file was: every new connection fails
        runtime.db.engine.dispose()
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.get_json() == {
            "status": "unavailable",
            "database": "unavailable",
            "schema": "unknown",
            "broker": "ok",
        }
        assert client.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        runtime.close()


def test_ops004_metrics_count_dispatches_upgrades_and_show_queue_depths(app, runtime):
    client = app.server.test_client()
    before = client.get("/metrics").get_data(as_text=True)
    ids = runtime.service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=2) for n in range(5)])
    runtime.service.upgrade_task(ids[0], "urgent", "metrics test", ROLE_USERS["manager"])
    runtime.service.cancel_task(ids[1], ROLE_USERS["manager"])

    def scrape() -> str:
        answer = client.get("/metrics")
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
        return answer.get_data(as_text=True)

    # The system gauges follow the overview snapshot, which refreshes every 2 s.
    wait_until(lambda: metric(scrape(), "switchyard_tasks", status="cancelled") == 1, timeout=15)
    text = scrape()

    def grew(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    assert grew("switchyard_tasks_dispatched_total", category="webapp", bucket="low") == 5
    assert grew("switchyard_upgrades_total", action="urgent") == 1
    assert grew("switchyard_tasks_cancelled_total") == 1
    assert metric(text, "switchyard_queued_messages", bucket="low") == 3
    assert metric(text, "switchyard_queued_messages", bucket="high") == 1
    assert metric(text, "switchyard_queued_messages_by_subject", subject="tasks.webapp.default.high") == 1
    assert metric(text, "switchyard_tasks", status="queued") == 4
    assert metric(text, "switchyard_relay_backlog") == 0 and metric(text, "switchyard_snapshot_ok") == 1


def test_ops005_metrics_token_when_configured(settings, runtime):
    guarded = create_app(replace(settings, metrics_token="s3cret-token-for-scrapers"), runtime)
    client = guarded.server.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-token-for-scrapers"}).status_code == 200


def test_ops006_a_worker_serves_its_own_metrics_and_logs_json(settings, runtime, tmp_path):
    port = free_port()
    log = tmp_path / "worker.log"
    worker = spawn_worker(settings, "--metrics-port", str(port), log=log, SWITCHYARD_LOG_FORMAT="json")
    try:
        ok = runtime.service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=9) for n in range(3)])
        bad = runtime.service.dispatch_task("demo.fail", priority=5, max_attempts=1)
        wait_until(lambda: port_open("127.0.0.1", port), timeout=30, message="metrics port open")

        def scraped() -> str:
            return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

        def settled() -> bool:  # the failing task is in the normal bucket, so it finishes after the three high ones
            text = scraped()
            completed = metric(text, "switchyard_tasks_completed_total", bucket="high")
            return completed == 3 and metric(text, "switchyard_tasks_failed_total", bucket="normal") == 1

        wait_until(settled, timeout=30, message="three completed and one failed in the worker's metrics")
        text = scraped()
        assert metric(text, "switchyard_tasks_failed_total", bucket="normal") == 1
        assert metric(text, "switchyard_queue_wait_seconds_count", bucket="high") == 3
        assert metric(text, "switchyard_run_seconds_count", bucket="normal") == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message", "worker_id"} <= set(line) for line in lines)
    failure = [line for line in lines if line.get("task_id") == bad]
    assert failure and "demo.fail always fails" in failure[0]["message"]
    assert all(task_id not in {line.get("task_id") for line in lines} for task_id in ok)  # successes are quiet


def sign_in(session: requests.Session, base: str, username: str) -> None:
    form = session.get(f"{base}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    answer = session.post(f"{base}/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 200, answer.text[:200]


def callback(session: requests.Session, base: str, body: dict) -> dict:
    answer = session.post(
        f"{base}/_dash-update-component",
        json=body,
        headers={"X-CSRFToken": session.cookies.get("_csrf_token", ""), "Origin": base},
        timeout=20,
    )
    assert answer.status_code == 200, answer.text[:300]
    return answer.json()


def start_web(settings, port: int, log: Path, **env: str) -> subprocess.Popen:
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port)],
            env=settings_env(settings, **env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=output,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_ops007_two_web_processes_serve_the_same_data_and_sessions(settings, runtime, tmp_path):
    # Requests are logged at DEBUG (a console polls every 2 s; INFO would be nothing but polls).
    key = dict(SWITCHYARD_SECRET_KEY="k" * 48, SWITCHYARD_LOG_FORMAT="json", SWITCHYARD_LOG_LEVEL="debug")
    ports = [free_port(), free_port()]
    logs = [tmp_path / "web-a.log", tmp_path / "web-b.log"]
    webs = [start_web(settings, port, log, **key) for port, log in zip(ports, logs)]
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        for base in (a, b):
            wait_until(lambda base=base: _ready(base), timeout=60, message=f"{base} ready")
        ids = runtime.service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=1) for n in range(4)])
        runtime.service.upgrade_task(ids[0], "critical", "seen everywhere", ROLE_USERS["admin"])
        session = requests.Session()
        sign_in(session, a, ROLE_USERS["operator"])  # signed in on A ...

        def queued(base: str) -> dict[str, int]:
            body = callback(session, base, overview_request())["response"]
            return {b: _find(body, f"queued-{b}")["children"] for b in ("high", "normal", "low")}

        # ... and the same session works on B; both show the same queues once their snapshots refresh.
        expected = {"high": 1, "normal": 0, "low": 3}
        wait_until(lambda: queued(a) == expected and queued(b) == expected, timeout=20, message="same depths")
        detail_a = callback(session, a, _route_request(f"/tasks/{ids[0]}"))
        detail_b = callback(session, b, _route_request(f"/tasks/{ids[0]}"))
        assert "seen everywhere" in json.dumps(detail_a) and "seen everywhere" in json.dumps(detail_b)
        # Signing out on B ends the session on A too (sessions live in the database).
        session.post(f"{b}/logout", data={"csrf_token": session.cookies.get("_csrf_token", "")}, headers={"Origin": b})
        gone = session.post(
            f"{a}/_dash-update-component",
            json=overview_request(),
            headers={"X-CSRFToken": session.cookies.get("_csrf_token", ""), "Origin": a},
        )
        assert gone.status_code in (401, 403)
    finally:
        for web in webs:
            stop(web)
    for log in logs:
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        requests_logged = [e for e in entries if e.get("path") == "/_dash-update-component"]
        assert requests_logged and all(e.get("request_id") and e.get("status") for e in requests_logged)
        assert any(e.get("user") == ROLE_USERS["operator"] for e in requests_logged)


def test_ops009_requests_log_at_debug_and_refusals_at_info(app, caplog):
    """A console polls every 2 s: at the default level (INFO) the log keeps what matters, not polls."""
    import logging

    caplog.set_level(logging.DEBUG, logger="switchyard.web")
    client = app.server.test_client()
    assert client.get("/login").status_code == 200
    assert client.post("/_dash-update-component", json={}).status_code in (401, 403)
    assert client.get("/healthz").status_code == 200  # quiet paths: not logged at all
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "switchyard.web"]
    assert (logging.DEBUG, "GET /login 200") in logged
    assert [m for level, m in logged if m.startswith("POST /_dash-update-component")] and all(
        level == logging.INFO for level, m in logged if m.startswith("POST /_dash-update-component")
    )
    assert not [m for _, m in logged if "/healthz" in m]


def test_ops008_gunicorn_runs_several_web_processes(settings, runtime, tmp_path):
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = settings_env(
        settings,
        SWITCHYARD_PORT=str(port),
        SWITCHYARD_WEB_PROCESSES="2",
        SWITCHYARD_SECRET_KEY="g" * 48,
        SWITCHYARD_DATA_DIR=str(tmp_path / "data"),
    )
    gunicorn = Path(sys.executable).parent / "gunicorn"
    with open(log, "ab") as output:
        master = subprocess.Popen(
            [str(gunicorn), "-c", "python:dashboard.gunicorn_conf", "dashboard.wsgi:application"],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=output,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(base), timeout=90, message="gunicorn ready")
        children = _children(master.pid)
        assert len(children) == 2, log.read_text()[-2000:]
        runtime.service.dispatch_tasks([DispatchRequest("demo.echo", {"n": n}, priority=6) for n in range(2)])
        session = requests.Session()
        sign_in(session, base, ROLE_USERS["viewer"])
        for _ in range(10):  # requests land on either process; each answers from its own snapshot
            callback(session, base, overview_request())

        def normal() -> int:
            return _find(callback(session, base, overview_request())["response"], "queued-normal")["children"]

        wait_until(lambda: normal() == 2, timeout=20, message="both processes see the queue")
        assert all(normal() == 2 for _ in range(6))
        assert "switchyard_queued_messages" in requests.get(f"{base}/metrics", timeout=10).text
        # Each web process keeps its counters in a file of its own, added up at /metrics.
        files = {int(f.stem.rsplit("_", 1)[1]) for f in (tmp_path / "data" / "metrics").glob("counter_*.db")}
        assert set(children) <= files
    finally:
        stop(master)


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _find(tree, component_id: str) -> dict:
    """The props of the component with this id in a Dash callback response."""
    if isinstance(tree, dict):
        props = tree.get("props")
        if isinstance(props, dict) and props.get("id") == component_id:
            return props
        for value in tree.values():
            found = _find(value, component_id)
            if found:
                return found
    elif isinstance(tree, list):
        for value in tree:
            found = _find(value, component_id)
            if found:
                return found
    return {}


def _route_request(path: str) -> dict:
    return {
        "output": "..page.children...navbar.children..",
        "outputs": [{"id": "page", "property": "children"}, {"id": "navbar", "property": "children"}],
        "inputs": [{"id": "url", "property": "pathname", "value": path}],
        "changedPropIds": ["url.pathname"],
        "state": [{"id": "url", "property": "search", "value": ""}],
    }
