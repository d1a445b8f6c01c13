"""Tasks page and task page: the listing query, the per-row actions for every role, the
action callbacks' logic with a real runtime, and forged callback requests through the app."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from dash import no_update
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, update

from core.auth.permissions import ROLE_PERMISSIONS, Role
from core.tasks import reads
from core.tasks.rows import DispatchRequest
from dashboard.app import create_app
from dashboard.auth import ConsoleUser
from dashboard.components import task_actions
from dashboard.pages import task_detail, tasks
from db.models import AuditLog, PriorityHistory, Task, TaskStatus, utcnow
from db.queries.task_list import TaskFilters, count_tasks, list_tasks, normalize_sort
from db.queries.tasks import tasks_with_correlation
from tests.support.constants import PASSWORD, ROLE_USERS


def console_user(role: str) -> ConsoleUser:
    r = Role(role)
    return ConsoleUser("test-session", ROLE_USERS[role], r, ROLE_PERMISSIONS[r])


def seed(runtime, n=30):
    """n tasks with spread-out creation times, statuses, categories and priorities."""
    requests = []
    for i in range(n):
        name = ("etl.extract", "etl.load", "demo.echo", "demo.record")[i % 4]
        requests.append(DispatchRequest(name, args={"i": i}, priority=i % 11, correlation_id=f"corr-{i % 3}"))
    ids = runtime.service.dispatch_tasks(requests, created_by="test")
    base = utcnow() - timedelta(hours=1)
    statuses = (TaskStatus.QUEUED, TaskStatus.FAILED, TaskStatus.SUCCEEDED)
    with runtime.db.session(write=True) as session:
        for i, task_id in enumerate(ids):
            session.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(created_at=base + timedelta(seconds=i), status=statuses[i % 3], publish_due_at=None)
            )
    return ids


def make_failed(runtime, task_id):
    with runtime.db.session(write=True) as session:
        session.execute(update(Task).where(Task.id == task_id).values(status=TaskStatus.FAILED, publish_due_at=None))


def task_row(runtime, task_id) -> Task:
    with runtime.db.session() as session:
        return session.get(Task, task_id)


class Ctx:
    def __init__(self, runtime):
        self.runtime = runtime
        self.service = runtime.service
        self.db = runtime.db


# -- the query ---------------------------------------------------------------------------------


def test_con_t001_list_default_order_newest_first_with_exact_short_count(runtime):
    ids = seed(runtime, 30)
    with runtime.db.session() as session:
        rows, total = list_tasks(session, TaskFilters(), None, 0, 100)
    assert total == 30
    assert [r["id"] for r in rows] == list(reversed(ids))
    assert set(rows[0]) >= {"id", "name", "status", "priority", "bucket", "created_at", "correlation_id"}
    assert "args" not in rows[0]


def test_con_t002_list_pages_and_counts(runtime):
    ids = seed(runtime, 30)
    newest = list(reversed(ids))
    with runtime.db.session() as session:
        page1, total1 = list_tasks(session, TaskFilters(), None, 0, 10)
        page2, total2 = list_tasks(session, TaskFilters(), None, 10, 20)
        last, total3 = list_tasks(session, TaskFilters(), None, 25, 35)
        capped, total4 = list_tasks(session, TaskFilters(), None, 0, 10, count_cap=20)
    assert [r["id"] for r in page1] == newest[:10] and total1 == 30
    assert [r["id"] for r in page2] == newest[10:20] and total2 == 30
    assert [r["id"] for r in last] == newest[25:] and total3 == 30
    assert len(capped) == 10 and total4 is None  # more than the cap: unknown (-1 for the grid)


def test_con_t003_list_filters(runtime):
    seed(runtime, 30)
    with runtime.db.session() as session:
        queued, total = list_tasks(session, TaskFilters(statuses=("queued",)), None, 0, 100)
        assert total == 10 and {r["status"] for r in queued} == {"queued"}
        two, total = list_tasks(session, TaskFilters(statuses=("queued", "failed")), None, 0, 100)
        assert total == 20 and {r["status"] for r in two} == {"queued", "failed"}
        assert [r["created_at"] for r in two] == sorted((r["created_at"] for r in two), reverse=True)
        etl, _ = list_tasks(session, TaskFilters(categories=("etl",), phases=("load",)), None, 0, 100)
        assert etl and all(r["category"] == "etl" and r["phase"] == "load" for r in etl)
        high, _ = list_tasks(session, TaskFilters(buckets=("high",)), None, 0, 100)
        assert high and all(r["bucket"] == "high" and r["priority"] >= 8 for r in high)
        by_corr, total = list_tasks(session, TaskFilters(text="corr-1"), None, 0, 100)
        assert total == 10 and {r["correlation_id"] for r in by_corr} == {"corr-1"}
        by_name, _ = list_tasks(session, TaskFilters(text="etl."), None, 0, 100)
        assert by_name and all(r["name"].startswith("etl.") for r in by_name)
        some = queued[0]["id"]
        by_id, total = list_tasks(session, TaskFilters(text=some[:20].upper()), None, 0, 100)
        assert some in [r["id"] for r in by_id] and total == len(by_id)
        nothing, total = list_tasks(session, TaskFilters(text="no-such-thing"), None, 0, 100)
        assert nothing == [] and total == 0
        # Plain words are written into the SQL; anything else stays a bound parameter.
        for odd in ("x'; drop table tasks; --", "ω"):
            odd_filters = TaskFilters(categories=(odd,), statuses=("queued", odd))
            assert list_tasks(session, odd_filters, None, 0, 100) == ([], 0)
        assert count_tasks(session, TaskFilters(statuses=("failed",))) == 10
        assert count_tasks(session, TaskFilters(), cap=5) is None


def test_con_t004_list_sorting_and_bad_sort_input(runtime):
    seed(runtime, 30)
    with runtime.db.session() as session:
        for col, key in (
            ("priority", "priority"),
            ("name", "name"),
            ("status", "status"),
            ("id", "id"),
            ("created", "created_at"),
        ):
            for direction in ("asc", "desc"):
                rows, _ = list_tasks(session, TaskFilters(), [{"colId": col, "sort": direction}], 0, 100)
                # Ties are broken by created_at, then id, in the same direction (an index order).
                values = [(r[key], r["created_at"], r["id"]) for r in rows]
                assert values == sorted(values, reverse=direction == "desc"), (col, direction)
                assert len(values) == 30
        # Columns no index orders are filtered on, not sorted on: the default order.
        for col in ("attempts", "category", "phase", "bucket"):
            assert normalize_sort([{"colId": col, "sort": "asc"}]) == [("created", "desc")]
        # Several statuses (merged walks) page the same way as one list would.
        both = TaskFilters(statuses=("queued", "failed"))
        whole, _ = list_tasks(session, both, [{"colId": "priority", "sort": "desc"}], 0, 100)
        paged = [
            r
            for start in (0, 7, 14)
            for r in list_tasks(session, both, [{"colId": "priority", "sort": "desc"}], start, start + 7)[0]
        ]
        assert [r["id"] for r in paged] == [r["id"] for r in whole]
        oldest_first = [{"colId": "created", "sort": "asc"}]
        rows, _ = list_tasks(session, TaskFilters(statuses=("queued", "failed")), oldest_first, 0, 100)
        assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)
    assert normalize_sort([{"colId": "args; drop table tasks", "sort": "asc"}, {"colId": "name", "sort": "up"}]) == [
        ("created", "desc")
    ]
    assert normalize_sort([{"colId": "priority", "sort": "asc"}]) == [("priority", "asc")]


def test_con_t005_filters_from_untrusted_inputs():
    f = TaskFilters.from_inputs(["queued", 5, None, "x" * 40], "low", {"a": 1}, None, "  abc  ")
    assert f.statuses == ("queued",) and f.buckets == ("low",) and f.categories == () and f.text == "abc"
    assert TaskFilters.from_inputs().empty


def test_con_t006_correlation_siblings(runtime):
    seed(runtime, 9)
    with runtime.db.session() as session:
        siblings = tasks_with_correlation(session, "corr-0")
    assert len(siblings) == 3 and {s["id"] for s in siblings}


# -- actions per role ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role, status, priority, expected",
    [
        ("viewer", "queued", 5, []),
        ("viewer", "failed", 5, []),
        ("operator", "queued", 5, ["prioritize"]),
        ("operator", "queued", 8, []),
        ("operator", "failed", 5, ["retry"]),
        ("operator", "running", 5, []),
        ("manager", "queued", 5, ["prioritize", "urgent", "cancel"]),
        ("manager", "queued", 8, ["urgent", "cancel"]),
        ("manager", "queued", 9, ["cancel"]),
        ("manager", "failed", 3, ["retry"]),
        ("admin", "queued", 0, ["prioritize", "urgent", "critical", "cancel"]),
        ("admin", "queued", 9, ["critical", "cancel"]),
        ("admin", "queued", 10, ["cancel"]),
        ("admin", "succeeded", 5, []),
        ("admin", "cancelled", 5, []),
        ("admin", "failed", 10, ["retry"]),
    ],
)
def test_con_t010_allowed_actions_per_role(role, status, priority, expected):
    assert reads.allowed_actions(status, priority, ROLE_PERMISSIONS[Role(role)]) == expected


def test_con_t011_grid_rows_carry_actions_for_the_user(runtime):
    seed(runtime, 12)
    ctx = Ctx(runtime)
    request = {"startRow": 0, "endRow": 50, "sortModel": [{"colId": "priority", "sort": "asc"}]}
    viewer = tasks.fetch_rows(ctx, console_user("viewer"), request, TaskFilters())
    admin = tasks.fetch_rows(ctx, console_user("admin"), request, TaskFilters(statuses=("queued",)))
    assert viewer["rowCount"] == 12 and all(r["actions"] == [] for r in viewer["rowData"])
    assert admin["rowCount"] == 4
    for row in admin["rowData"]:
        assert row["actions"] == reads.allowed_actions("queued", row["priority"], ROLE_PERMISSIONS[Role.ADMIN])
        assert row["created_at"] and "T" in row["created_at"]
    json.dumps(admin)  # the response is plain JSON


# -- callback logic with a real runtime ------------------------------------------------------


@pytest.fixture
def flow(runtime):
    return Ctx(runtime), task_actions.signer("test-secret")


def dialog(outputs: tuple) -> task_actions.Dialog:
    """An action callback's outputs by name."""
    return task_actions.Dialog(*outputs)


def test_con_t020_upgrade_opens_dialog_then_confirm_upgrades(runtime, flow):
    ctx, serializer = flow
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    mona = console_user("manager")
    opened = dialog(task_actions.request_action(ctx, serializer, mona, task_id, "urgent"))
    assert opened.open is True and opened.token and task_row(runtime, task_id).priority == 5  # nothing done yet
    assert opened.confirm_label == "Urgent" and opened.reason_style == task_actions.SHOW
    done = dialog(task_actions.confirm_action(ctx, serializer, mona, opened.token, "customer waiting"))
    assert done.open is False and done.done
    assert "raised from 5" in str(done.result.children) and done.result.color == "success"
    row = task_row(runtime, task_id)
    assert row.priority == 9 and row.bucket == "high"
    with runtime.db.session() as session:
        history = session.scalars(select(PriorityHistory).where(PriorityHistory.task_id == task_id)).all()
    assert [(h.action, h.changed_by, h.reason) for h in history] == [("urgent", "mona", "customer waiting")]


def test_con_t021_confirm_without_reason_keeps_dialog_open(runtime, flow):
    ctx, serializer = flow
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    otto = console_user("operator")
    token = dialog(task_actions.request_action(ctx, serializer, otto, task_id, "prioritize")).token
    kept = dialog(task_actions.confirm_action(ctx, serializer, otto, token, "   "))
    assert kept.open is no_update and kept.token is no_update  # the dialog stays, with its token
    assert "An upgrade needs a reason." in str(kept.feedback.children) and kept.result is no_update
    assert task_row(runtime, task_id).priority == 5


def test_con_t022_token_bound_to_user_and_unforgeable(runtime, flow):
    ctx, serializer = flow
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    ada_token = dialog(task_actions.request_action(ctx, serializer, console_user("admin"), task_id, "critical")).token
    for user, token in (
        (console_user("operator"), ada_token),  # someone else's dialog
        (console_user("admin"), ada_token[:-2] + "xx"),  # tampered
        (
            console_user("admin"),
            task_actions.signer("other").dumps({"user": "ada", "task": task_id, "action": "critical"}),
        ),
        (console_user("admin"), None),
    ):
        out = dialog(task_actions.confirm_action(ctx, serializer, user, token, "because", client="10.1.2.3"))
        assert out.result.color == "danger" and "not issued to you" in str(out.result.children)
    assert task_row(runtime, task_id).priority == 5
    with runtime.db.session() as session:
        denied = session.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.target, AuditLog.outcome, AuditLog.address)
            .where(AuditLog.outcome != "ok")
            .order_by(AuditLog.id)
        ).all()
    assert [tuple(r) for r in denied] == [
        ("otto", "critical", task_id, "denied", "10.1.2.3"),
        ("ada", "upgrade", None, "denied", "10.1.2.3"),
        ("ada", "upgrade", None, "denied", "10.1.2.3"),
        ("ada", "upgrade", None, "denied", "10.1.2.3"),
    ]

    # An honest user who waited too long is told so, and it is recorded as refused, not denied.
    class HourAgo(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - 3600

    earlier = URLSafeTimedSerializer("test-secret", salt=task_actions.signer("x").salt, signer=HourAgo)
    stale = task_actions.sign_pending(earlier, console_user("admin"), task_id, "critical")
    out = dialog(task_actions.confirm_action(ctx, serializer, console_user("admin"), stale, "because"))
    assert "no longer valid" in str(out.result.children)
    with runtime.db.session() as session:
        last = session.scalars(select(AuditLog.outcome).order_by(AuditLog.id.desc()).limit(1)).one()
    assert last == "refused" and task_row(runtime, task_id).priority == 5


def test_con_t023_operator_critical_refused_by_core(runtime, flow):
    ctx, serializer = flow
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    otto = console_user("operator")
    # No dialog for an action the role may not take; the refusal says why (and is audited).
    refused = dialog(task_actions.request_action(ctx, serializer, otto, task_id, "critical"))
    assert refused.open is False and refused.result.color == "danger"
    # A token forged for it is refused on confirm.
    token = task_actions.sign_pending(serializer, otto, task_id, "critical")
    out = dialog(task_actions.confirm_action(ctx, serializer, otto, token, "let me"))
    assert out.result.color == "danger"
    assert task_row(runtime, task_id).priority == 5
    # Even with a stale ConsoleUser claiming admin permissions, core asks the database.
    fake_admin = ConsoleUser("test-session", "otto", Role.ADMIN, ROLE_PERMISSIONS[Role.ADMIN])
    alert = task_actions.perform_action(ctx, fake_admin, task_id, "critical", "let me")
    assert alert.color == "danger" and task_row(runtime, task_id).priority == 5


def test_con_t024_cancel_and_retry_ask_first_with_refusals_shown(runtime, flow):
    ctx, serializer = flow
    queued = runtime.service.dispatch_task("demo.echo", priority=5)
    failed = runtime.service.dispatch_task("demo.echo", priority=3)
    make_failed(runtime, failed)
    otto, mona = console_user("operator"), console_user("manager")

    out = dialog(task_actions.request_action(ctx, serializer, otto, queued, "cancel"))
    assert out.open is False and out.result.color == "danger" and task_row(runtime, queued).status == "queued"
    asked = dialog(task_actions.request_action(ctx, serializer, mona, queued, "cancel"))
    assert asked.open is True and asked.title == "Cancel this task?" and asked.confirm_label == "Cancel task"
    assert "optional" in asked.reason_label and task_row(runtime, queued).status == "queued"
    out = dialog(task_actions.confirm_action(ctx, serializer, mona, asked.token, "duplicate of another run"))
    assert out.result.color == "success" and out.done and task_row(runtime, queued).status == "cancelled"
    with runtime.db.session() as session:
        entry = session.scalars(select(AuditLog).where(AuditLog.action == "cancel", AuditLog.outcome == "ok")).one()
    assert (entry.actor, entry.target, entry.detail) == ("mona", queued, "duplicate of another run")
    again = dialog(task_actions.request_action(ctx, serializer, mona, queued, "cancel"))
    out = dialog(task_actions.confirm_action(ctx, serializer, mona, again.token, ""))
    assert out.result.color == "danger" and "only queued" in str(out.result.children)

    out = dialog(task_actions.request_action(ctx, serializer, console_user("viewer"), failed, "retry"))
    assert out.result.color == "danger" and task_row(runtime, failed).status == "failed"
    asked = dialog(task_actions.request_action(ctx, serializer, otto, failed, "retry"))
    assert asked.open is True and asked.reason_style == task_actions.HIDE and asked.confirm_label == "Retry task"
    assert task_row(runtime, failed).status == "failed"
    out = dialog(task_actions.confirm_action(ctx, serializer, otto, asked.token, None))
    assert out.result.color == "success"
    row = task_row(runtime, failed)
    assert row.status == "queued" and row.priority == 3


def test_con_t025_not_an_upgrade_and_unknown_inputs(runtime, flow):
    ctx, serializer = flow
    task_id = runtime.service.dispatch_task("demo.echo", priority=9)
    alert = task_actions.perform_action(ctx, console_user("admin"), task_id, "prioritize", "x")
    assert alert.color == "danger" and "would not raise it" in str(alert.children)
    alert = task_actions.perform_action(ctx, console_user("admin"), task_id, "explode", "x")
    assert alert.color == "danger" and "unknown action" in str(alert.children)
    alert = task_actions.perform_action(ctx, console_user("admin"), "nope", "cancel")
    assert alert.color == "danger" and "no task with id" in str(alert.children)
    with pytest.raises(Exception):  # PreventUpdate: not an action at all
        task_actions.request_action(ctx, serializer, console_user("admin"), {"id": 1}, "cancel")
    with pytest.raises(Exception):
        task_actions.request_action(ctx, serializer, console_user("admin"), task_id, "drop")


def test_con_t026_detail_click_guard():
    assert task_detail.clicked_action({"type": "task-action", "action": "cancel", "task": "t1"}, None) is None
    assert task_detail.clicked_action({"type": "task-action", "action": "cancel", "task": "t1"}, 0) is None
    assert task_detail.clicked_action({"type": "task-action", "action": "cancel", "task": "t1"}, 1) == ("t1", "cancel")
    assert task_detail.clicked_action({"type": "task-action", "action": "rm", "task": "t1"}, 1) is None
    assert task_detail.clicked_action("reason-confirm", 1) is None


def test_con_t027_detail_renders_text_history_and_unknown_id(runtime):
    ctx = Ctx(runtime)
    evil = "<script>alert(1)</script>"
    task_id = runtime.service.dispatch_task("demo.echo", args={"html": evil}, correlation_id="pipe-1")
    sibling = runtime.service.dispatch_task("demo.echo", correlation_id="pipe-1")
    runtime.service.upgrade_task(task_id, "prioritize", f"because {evil}", "otto")
    body = task_detail.render_detail(ctx, console_user("manager"), task_id)
    text = json.dumps(body.to_plotly_json(), default=lambda o: o.to_plotly_json())
    assert evil in text  # present as a text child (Dash escapes it), never as markup
    assert "dangerously" not in text
    assert f"/tasks/{sibling}" in text and "prioritize" in text and "because" in text
    assert "action-urgent" in text and "action-cancel" in text and "action-prioritize" not in text
    viewer_body = json.dumps(
        task_detail.render_detail(ctx, console_user("viewer"), task_id).to_plotly_json(),
        default=lambda o: o.to_plotly_json(),
    )
    assert "task-action" not in viewer_body
    missing = task_detail.render_detail(ctx, console_user("viewer"), "does-not-exist")
    assert "no task with id" in json.dumps(missing.to_plotly_json(), default=lambda o: o.to_plotly_json())
    assert task_detail.task_id_from_path("/tasks/abc%20def") == "abc def"


# -- through the app: pages, and forged callback requests ------------------------------------


@pytest.fixture
def app(settings, runtime):
    return create_app(settings, runtime)


def sign_in(client, username):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302


def find_callback(client, input_id, prop):
    deps = client.get("/_dash-dependencies").get_json()
    for dep in deps:
        if any(i["id"] == input_id and i["property"] == prop for i in dep["inputs"]):
            return dep
    raise AssertionError(f"no callback on {input_id}.{prop}")


def call(client, dep, inputs: dict, state: dict | None = None):
    def outputs(spec):
        parts = spec.strip(".").split("...")
        return [dict(zip(("id", "property"), p.rsplit(".", 1))) for p in parts]

    body = {
        "output": dep["output"],
        "outputs": outputs(dep["output"]),
        "inputs": [dict(i, value=inputs.get((i["id"], i["property"]))) for i in dep["inputs"]],
        "state": [dict(s, value=(state or {}).get((s["id"], s["property"]))) for s in dep["state"]],
        "changedPropIds": [f"{k[0]}.{k[1]}" for k in inputs],
    }
    token = client.get_cookie("_csrf_token").value
    return client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})


def test_con_t030_app_serves_pages_and_rows(app, runtime):
    seed(runtime, 12)
    client = app.server.test_client()
    sign_in(client, "vera")
    route = find_callback(client, "url", "pathname")
    page = call(client, route, {("url", "pathname"): "/tasks"})
    assert page.status_code == 200 and "tasks-grid" in page.get_data(as_text=True)
    dep = find_callback(client, "tasks-grid", "getRowsRequest")
    response = call(
        client,
        dep,
        {("tasks-grid", "getRowsRequest"): {"startRow": 0, "endRow": 100, "sortModel": []}},
        {("tasks-filter-status", "value"): ["failed"]},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()["response"]["tasks-grid"]["getRowsResponse"]
    assert data["rowCount"] == 4 and all(r["status"] == "failed" and r["actions"] == [] for r in data["rowData"])
    missing = call(client, route, {("url", "pathname"): "/tasks/nope"})
    assert "no task with id" in missing.get_data(as_text=True)


def test_con_t031_forged_critical_from_operator_session_changes_nothing(app, runtime):
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    client = app.server.test_client()
    sign_in(client, "otto")
    grid = find_callback(client, "tasks-grid", "cellRendererData")
    click = {"value": {"action": "critical", "task_id": task_id, "nonce": 1}, "colId": "actions"}
    opened = call(client, grid, {("tasks-grid", "cellRendererData"): click})
    assert opened.status_code == 200, opened.get_data(as_text=True)
    outputs = opened.get_json()["response"]
    token = next(v for k, v in outputs.items() if k == "task-action-pending")["data"]
    dialog = find_callback(client, "reason-confirm", "n_clicks")
    confirmed = call(
        client,
        dialog,
        {("reason-confirm", "n_clicks"): 1, ("reason-close", "n_clicks"): None},
        {("task-action-pending", "data"): token, ("reason-input", "value"): "forged"},
    )
    assert confirmed.status_code == 200
    assert "not allowed" in confirmed.get_data(as_text=True).lower() or "cannot" in confirmed.get_data(as_text=True)
    row = task_row(runtime, task_id)
    assert row.priority == 5 and row.generation == 1
    with runtime.db.session() as session:
        denied = (
            session.execute(select(AuditLog.outcome).where(AuditLog.actor == "otto", AuditLog.action == "critical"))
            .scalars()
            .all()
        )
        history = session.scalars(select(PriorityHistory)).all()
    assert denied == ["denied"] and history == []
    # A re-render (no nonce) never acts.
    rerender = call(client, grid, {("tasks-grid", "cellRendererData"): None})
    assert rerender.status_code == 204


def test_con_t032_forged_cancel_from_operator_refused_manager_allowed(app, runtime):
    task_id = runtime.service.dispatch_task("demo.echo", priority=5)
    client = app.server.test_client()
    sign_in(client, "otto")
    grid = find_callback(client, "tasks-grid", "cellRendererData")
    confirm = find_callback(client, "reason-confirm", "n_clicks")
    click = {"value": {"action": "cancel", "task_id": task_id, "nonce": 2}}
    response = call(client, grid, {("tasks-grid", "cellRendererData"): click})
    assert response.status_code == 200 and task_row(runtime, task_id).status == "queued"
    assert response.get_json()["response"]["task-action-pending"]["data"] is None  # no dialog for otto
    manager = app.server.test_client()
    sign_in(manager, "mona")
    response = call(manager, grid, {("tasks-grid", "cellRendererData"): click})
    assert response.status_code == 200 and task_row(runtime, task_id).status == "queued"  # it asks first
    token = response.get_json()["response"]["task-action-pending"]["data"]
    # otto replays mona's confirmation: refused; mona confirms: cancelled.
    for who, expected in ((client, "queued"), (manager, "cancelled")):
        response = call(
            who,
            confirm,
            {("reason-confirm", "n_clicks"): 1, ("reason-close", "n_clicks"): None},
            {("task-action-pending", "data"): token, ("reason-input", "value"): ""},
        )
        assert response.status_code == 200 and task_row(runtime, task_id).status == expected
