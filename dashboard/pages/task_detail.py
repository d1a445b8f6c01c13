"""One task: arguments, timeline, error, result, its pipeline (correlation id), its priority
history, and the actions the signed-in user may take (the shared task-actions component: the
same reason dialog and alert as the Tasks page).

Everything a user or a task supplied (arguments, errors, results, reasons, names) is rendered
as text children: Dash escapes them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx
from dash.exceptions import PreventUpdate

from core.auth.permissions import Permission
from core.errors import SwitchyardError
from core.priority import Priority
from core.sanitize import clean_json
from core.tasks import reads
from core.timefmt import ago, clock, when
from dashboard.components import task_actions
from dashboard.components.common import acting_user, address

PATH = "/tasks/"
TITLE = "Task"
PERMISSION = Permission.VIEW_TASKS
DISPLAY_LIMIT = 64 * 1024  # characters of arguments or result the page shows
REFRESH_MS = 2000


def matches(path: str) -> bool:
    return path.startswith("/tasks/") and len(path) > len("/tasks/")


def task_id_from_path(path: str) -> str:
    return unquote(path[len("/tasks/") :]).strip("/")


def layout(ctx, user, path, query=None):
    task_id = task_id_from_path(path or "")
    return html.Div(
        [
            dcc.Link("← All tasks", href="/tasks", className="small", id="task-back"),
            dcc.Store(id="task-detail-id", data=task_id),
            # What the body below was drawn from: the live refresh draws it again when this changes.
            dcc.Store(id="task-detail-seen", data=fingerprint(ctx, user, task_id)),
            dcc.Interval(id="task-detail-tick", interval=REFRESH_MS),
            html.Span(id="task-detail-updated", className="updated ms-3"),
            task_actions.action_controls(),
            html.Div(render_detail(ctx, user, task_id), id="task-detail-body"),
        ]
    )


# -- rendering -------------------------------------------------------------------------------


def render_detail(ctx, user, task_id: str, *, client: str | None = None):
    try:
        task = reads.get_task(ctx.db, user, task_id, address=client, related=True)
    except SwitchyardError as error:
        return dbc.Alert(
            [html.H2("Task not found", className="h5"), html.P(str(error), className="mb-0")],
            color="warning",
            id="task-not-found",
            className="mt-3",
        )
    actions = reads.allowed_actions(task["status"], task["priority"], user.permissions)
    zone = user.time_zone
    return html.Div(
        [
            html.H1([html.Span(task["name"], id="task-name"), " ", _status_badge(task["status"])], className="h4 mt-2"),
            html.Div(["Task ", html.Code(task["id"], id="task-id")], className="text-muted mb-2"),
            action_buttons(task["id"], actions),
            dbc.Row(
                [
                    dbc.Col([_summary_card(task, zone), _card("Timeline", _timeline(task["timeline"], zone))], lg=5),
                    dbc.Col(
                        [
                            _card("Arguments", _pre(task["args"], "task-args")),
                            _card(f"Error of attempt {task['attempts']}", _pre_text(task["error"], "task-error"))
                            if task["error"]
                            else None,
                            _card("Result", _pre(task["result"], "task-result"))
                            if task["result"] is not None
                            else None,
                            _card(
                                f"Correlation id {task['correlation_id']}"
                                if task["correlation_id"]
                                else "Correlation id",
                                _related_table(task["related"], zone),
                            ),
                            _card("Priority history", _history_table(task["priority_history"], zone)),
                        ],
                        lg=7,
                    ),
                ],
                className="g-3 mt-1",
            ),
        ]
    )


def fingerprint(ctx, user, task_id: str) -> str | None:
    """What the page shows of a task that can change, to tell whether to draw it again."""
    try:
        task = reads.describe_task(ctx.db, task_id)
    except SwitchyardError:
        return None
    keys = ("status", "priority", "generation", "attempts", "worker_id", "error", "finished_at", "started_at")
    return json.dumps([task[k] for k in keys] + [len(task["priority_history"])], default=str)


def action_buttons(task_id: str, actions: list[str]):
    buttons = [
        html.Button(
            task_actions.ACTION_LABELS[action],
            id={"type": "task-action", "action": action, "task": task_id},
            className=f"btn btn-sm {task_actions.ACTION_STYLES[action]} me-2 task-action action-{action}",
            type="button",
            **{"data-task-id": task_id, "data-action": action},  # type: ignore[arg-type]
        )
        for action in actions
    ]
    return html.Div(buttons, className="task-detail-actions mb-2", id="task-detail-actions")


def _status_badge(status: str):
    colors = {"queued": "primary", "running": "info", "succeeded": "success", "failed": "danger"}
    return dbc.Badge(
        status, color=colors.get(status, "secondary"), id="task-status", className="align-middle status-badge"
    )


def _timeline(events: list[dict[str, Any]], zone: str):
    """Who did what to the task and when: dispatched, upgraded (by whom, why), attempts (which
    worker, what error), cancelled or retried (by whom)."""
    items = [
        html.Li(
            [
                html.Div(when(e["at"], zone), className="when"),
                html.Div([html.Strong(e["what"]), f" · {e['who']}" if e["who"] else ""]),
                html.Div(e["detail"], className="small text-muted text-break") if e["detail"] else None,
            ]
        )
        for e in events
    ]
    return html.Ol(items, className="timeline", id="task-timeline-events")


def _card(title: str, body):
    return dbc.Card([dbc.CardHeader(title), dbc.CardBody(body)], className="mb-3")


def _pre(value: Any, element_id: str):
    # Shown through clean_json: a row written before arguments were checked may hold anything.
    text = json.dumps(clean_json(value, DISPLAY_LIMIT), indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return html.Pre(text, id=element_id, className="mb-0")


def _pre_text(value: str | None, element_id: str):
    return html.Pre(value or "", id=element_id, className="mb-0 text-danger")


def _summary_card(task: dict[str, Any], zone: str):
    priority = task["priority"]
    status = task["status"]
    waiting = None
    if status == "queued":
        waiting = (
            f"waiting {ago((datetime.now(timezone.utc) - datetime.fromisoformat(task['queued_at'])).total_seconds())}"
        )
    fields = [
        ("Priority", f"{priority} {Priority(priority).label}", "task-priority"),
        ("Bucket", task["bucket"], "task-bucket"),
        ("Category · phase", f"{task['category']} · {task['phase']}", "task-category"),
        ("Created", when(task["created_at"], zone), "task-created"),
        ("Queued", when(task["queued_at"], zone) + (f" ({waiting})" if waiting else ""), "task-queued"),
        ("Started", when(task["started_at"], zone), "task-started"),
        ("Finished", when(task["finished_at"], zone), "task-finished"),
        ("Attempt", f"{task['attempts']} of {task['max_attempts']}", "task-attempts"),
        ("Worker", task["worker_id"] if status in ("running", "succeeded", "failed") else None, "task-worker"),
        ("Requeued", f"{task['generation'] - 1} time{'s' if task['generation'] != 2 else ''}", "task-requeued"),
        ("Dispatched by", task["created_by"], "task-created-by"),
    ]
    if task.get("publish_pending"):
        fields.append(("Broker", "waiting to be published", "task-publish-pending"))
    rows = [
        html.Tr(
            [
                html.Th(label, scope="row", className="fw-normal text-muted"),
                html.Td("–" if value is None else str(value), id=i),
            ]
        )
        for label, value, i in fields
    ]
    return _card("Now", dbc.Table(html.Tbody(rows), size="sm", className="mb-0", id="task-summary"))


def _related_table(others: list[dict[str, Any]], zone: str):
    if not others:
        return html.P("No other task shares this correlation id.", className="text-muted mb-0", id="task-related")
    rows = [
        html.Tr(
            [
                html.Td(dcc.Link(r["id"], href=f"/tasks/{r['id']}", className="task-link")),
                html.Td(r["name"]),
                html.Td(f"{r['category']} · {r['phase']}"),
                html.Td(r["status"]),
                html.Td(r["priority"]),
                html.Td(when(r["created_at"], zone)),
            ]
        )
        for r in others
    ]
    header = html.Tr([html.Th(h) for h in ("id", "name", "category · phase", "status", "priority", "created")])
    return dbc.Table([html.Thead(header), html.Tbody(rows)], size="sm", className="mb-0", id="task-related")


def _history_table(history: list[dict[str, Any]], zone: str):
    if not history:
        return html.P("Never changed.", className="text-muted mb-0", id="task-history")
    header = html.Tr([html.Th(h) for h in ("when", "from → to", "action", "by", "reason")])
    rows = [
        html.Tr(
            [
                html.Td(when(h["changed_at"], zone)),
                html.Td(f"{h['from_priority']} ({h['from_bucket']}) → {h['to_priority']} ({h['to_bucket']})"),
                html.Td(h["action"]),
                html.Td(h["changed_by"]),
                html.Td(h["reason"]),
            ]
        )
        for h in history
    ]
    return dbc.Table([html.Thead(header), html.Tbody(rows)], size="sm", className="mb-0", id="task-history")


# -- callbacks -------------------------------------------------------------------------------


def clicked_action(triggered_id: Any, triggered_value: Any) -> tuple[str, str] | None:
    """(task_id, action) from a real click on one of this page's buttons; None otherwise."""
    if not triggered_value or not isinstance(triggered_id, dict):
        return None
    task_id, action = triggered_id.get("task"), triggered_id.get("action")
    if not isinstance(task_id, str) or action not in reads.ACTIONS:
        return None
    return task_id, action


def register_callbacks(app, ctx) -> None:
    serializer = task_actions.signer(app.server.secret_key)

    @app.callback(
        *task_actions.SHARED_OUTPUTS,
        Input({"type": "task-action", "action": ALL, "task": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def button_action(_clicks):
        # Re-rendering the buttons fires this with n_clicks None (docs/architecture.md, "Dash
        # traps"): only a truthy triggering value is a click.
        triggered = dash_ctx.triggered[0] if dash_ctx.triggered else {}
        clicked = clicked_action(dash_ctx.triggered_id, triggered.get("value"))
        if clicked is None:
            raise PreventUpdate
        task_id, action = clicked
        return task_actions.request_action(ctx, serializer, acting_user(), task_id, action, client=address())

    @app.callback(
        Output("task-detail-body", "children"),
        Input("task-action-done", "data"),
        State("task-detail-id", "data"),
        prevent_initial_call=True,
    )
    def refresh(done, task_id):
        if not done or not isinstance(task_id, str):
            raise PreventUpdate
        return render_detail(ctx, acting_user(), task_id, client=address())

    @app.callback(
        Output("task-detail-body", "children", allow_duplicate=True),
        Output("task-detail-seen", "data"),
        Output("task-detail-updated", "children"),
        Input("task-detail-tick", "n_intervals"),
        State("task-detail-id", "data"),
        State("task-detail-seen", "data"),
        prevent_initial_call=True,
    )
    def live(_n, task_id, seen):
        """Every 2 s: the task drawn again when it changed (its status and the actions it offers
        with it); the time of the last look either way."""
        if not isinstance(task_id, str):
            raise PreventUpdate
        user = acting_user()
        now = f"Updated {clock(datetime.now(timezone.utc), user.time_zone)}"
        current = fingerprint(ctx, user, task_id)
        if current == seen:
            return no_update, no_update, now
        return render_detail(ctx, user, task_id, client=address()), current, now
