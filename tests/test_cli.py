"""run.py as operators use it: real processes, real broker, real database."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import requests

from core.broker.embedded import free_port, port_open
from db.engine import Database
from tests.support.constants import PASSWORD, ROLE_USERS, ROOT
from tests.support.harness import run_cli, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cli(settings):
    return functools.partial(run_cli, settings)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli001_dispatch_upgrade_status_cancel(cli):
    task_id = cli(
        "dispatch", "demo.echo", "--priority", "2", "--args", '{"to": "ops"}', "--correlation-id", "run-7"
    ).stdout.strip()
    assert len(task_id) == 32 and "\n" not in task_id
    upgraded = cli("upgrade", task_id, "--action", "urgent", "--reason", "SLA breach", "--as", ROLE_USERS["manager"])
    assert "raised from 2 (Background) to 9 (Urgent), low -> high" in upgraded.stdout
    status = json.loads(cli("status", task_id).stdout)
    assert (status["priority"], status["bucket"], status["correlation_id"], status["args"]) == (
        9,
        "high",
        "run-7",
        {"to": "ops"},
    )
    assert [
        (h["from_priority"], h["to_priority"], h["changed_by"], h["reason"]) for h in status["priority_history"]
    ] == [(2, 9, ROLE_USERS["manager"], "SLA breach")]
    depths = json.loads(cli("depths").stdout)
    assert depths["buckets"]["high"] == 1 and depths["subjects"] == {"tasks.webapp.default.high": 1}
    assert depths["database"]["status"]["queued"] == 1
    assert "cancelled" in cli("cancel", task_id, "--as", ROLE_USERS["admin"]).stdout
    assert json.loads(cli("depths").stdout)["buckets"]["high"] == 0


ERROR_CASES = [
    (["upgrade", "feedface", "--action", "urgent", "--reason", "r", "--as", "mona"], 3, "no task with id 'feedface'"),
    (["cancel", "feedface", "--as", "mona"], 3, "no task with id"),
    (["retry", "feedface", "--as", "otto"], 3, "no task with id"),
    (["status", "feedface"], 3, "no task with id"),
    (
        ["upgrade", "QUEUED", "--action", "critical", "--reason", "r", "--as", "otto"],
        4,
        "operator 'otto' may not make tasks critical",
    ),
    (["cancel", "QUEUED", "--as", "vera"], 4, "viewer 'vera' may not cancel tasks"),
    (["upgrade", "QUEUED", "--action", "urgent", "--reason", "r", "--as", "ghost"], 4, "does not exist or is disabled"),
    (["upgrade", "QUEUED", "--action", "maximum", "--reason", "r", "--as", "ada"], 2, "unknown action 'maximum'"),
    (["upgrade", "QUEUED", "--action", "urgent", "--as", "ada"], 2, "the following arguments are required: --reason"),
    (["upgrade", "QUEUED", "--action", "urgent", "--reason", "", "--as", "ada"], 2, "an upgrade needs a reason"),
    (["upgrade", "QUEUED", "--action", "prioritize", "--reason", "r", "--as", "ada"], 5, "already at priority 9"),
    (["retry", "QUEUED", "--as", "ada"], 5, "only failed tasks can be retried"),
    (["dispatch", "demo.echo", "--priority", "12"], 2, "from 0 to 10"),
    (["dispatch", "demo.echo", "--args", "{not json"], 2, "--args is not valid JSON"),
    (["dispatch", "demo.echo", "--args", "[1]"], 2, "must be a JSON object"),
    (["dispatch", "demo.missing"], 2, "unknown task name 'demo.missing'"),
    (["dispatch", "demo.echo", "--category", "mail"], 2, "unknown category 'mail'"),
    (["worker", "--buckets", "purple"], 2, "unknown bucket 'purple'"),
    (["worker", "--concurrency", "0"], 2, "--concurrency must be from 1 to 256"),
    (["worker", "--phase", "deploy"], 2, "unknown phase 'deploy'"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["users", "create", "bad name!", "--role", "admin"], 2, "user names are 1-64 characters"),
    (["users", "create", "newbie", "--role", "overlord"], 2, "unknown role 'overlord'"),
    (["users", "create", "ada", "--role", "admin"], 2, "user 'ada' already exists"),
]


def test_cli002_every_error_is_one_line_and_changes_nothing(cli, runtime):
    queued = cli("dispatch", "demo.echo", "--priority", "9").stdout.strip()
    before = runtime.service.describe_task(queued)
    for args, code, text in ERROR_CASES:
        args = [queued if a == "QUEUED" else a for a in args]
        result = cli(*args, extra_env={"SWITCHYARD_PASSWORD": PASSWORD}, expect=code)
        assert text in one_line_error(result), args
        assert result.stdout == ""
        assert runtime.service.describe_task(queued) == before, args
    assert json.loads(cli("depths").stdout)["database"]["status"]["queued"] == 1


def test_cli003_users_create_reads_the_password_from_the_environment(cli, settings):
    created = cli("users", "create", "nina", "--role", "operator", extra_env={"SWITCHYARD_PASSWORD": "s3cret-enough"})
    assert created.stdout.strip() == "user nina created with role operator"
    no_password = cli("users", "create", "nora", "--role", "viewer", expect=2)
    assert "set SWITCHYARD_PASSWORD" in one_line_error(no_password)
    short = cli("users", "create", "nora", "--role", "viewer", extra_env={"SWITCHYARD_PASSWORD": "short"}, expect=2)
    assert "at least 8 characters" in one_line_error(short)
    task_id = cli("dispatch", "demo.echo", "--priority", "1").stdout.strip()
    assert (
        "Prioritize" in cli("upgrade", task_id, "--action", "prioritize", "--reason", "new hire", "--as", "nina").stdout
    )


def test_cli004_serve_starts_and_stops_its_own_broker(tmp_path, database_url):
    empty = Database(database_url)  # a first start: no users yet (PostgreSQL is shared between tests)
    empty.drop_schema()
    empty.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    port = free_port()
    env.update(SWITCHYARD_DATA_DIR=str(tmp_path / "data"), SWITCHYARD_DATABASE_URL=database_url)
    refused = subprocess.run(  # a first start on an empty database is told what to run
        [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 7 and "run `python run.py db upgrade`" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    upgraded = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "db", "upgrade"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert upgraded.returncode == 0 and upgraded.stdout.startswith("schema at "), upgraded.stderr
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The URL first, then the one-time admin password in a frame that stands out from the logs.
        assert server.stdout.readline().strip() == f"Switchyard console: http://127.0.0.1:{port}/"
        assert server.stdout.readline().startswith("broker: nats://")
        notice = [server.stdout.readline().rstrip("\n") for _ in range(7)]
        assert notice[0] == "" and notice[1] == notice[5] and re.fullmatch(r"\+-+\+", notice[1])
        assert "sign in as  admin" in notice[2] and "My account" in notice[4]
        assert all(len(line) == len(notice[1]) and line[0] == line[-1] == "|" for line in notice[2:5])
        password = notice[3].strip("| ").strip()
        assert len(password) >= 12
        url_file = tmp_path / "data" / "nats" / "url"
        broker_url = url_file.read_text()
        broker_port = int(broker_url.rsplit(":", 1)[1])
        assert broker_port != 4222 and port_open("127.0.0.1", broker_port)
        browser = requests.Session()
        form = browser.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert form.url.startswith(f"http://127.0.0.1:{port}/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed_in = browser.post(form.url, data={"username": "admin", "password": password, "csrf_token": token})
        assert signed_in.status_code == 200 and signed_in.url == f"http://127.0.0.1:{port}/"
        # Commands started later on this machine find the embedded broker by themselves.
        dispatched = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), "dispatch", "demo.echo"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dispatched.returncode == 0 and dispatched.stderr == "", dispatched.stderr
        depths = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), "depths"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(depths.stdout)["buckets"]["normal"] == 1
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        wait_until(lambda: not port_open("127.0.0.1", broker_port), timeout=10, message="embedded broker stopped")
        assert not url_file.exists()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stdout.close()
        server.stderr.close()
