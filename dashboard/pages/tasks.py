"""Tasks: every task in an AG Grid (infinite row model over the database), filters above it,
and per-row actions (Prioritize / Urgent / Critical / Cancel / Retry).

The actions a row offers are computed here from its status and the signed-in user's
permissions; core checks the permission again on every call (DESIGN section 2), so the
buttons are a convenience, never the check.

The reason dialog, the pending-action store and the result alert are shared with the task
page (`action_controls()`); the callbacks that confirm an action live here and are registered
once per app. A pending upgrade is held in the browser as a token signed with the app's
secret key and bound to the user who opened it, so a forged or replayed confirmation for
another task, action or user is refused before core is even asked.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx
from dash.exceptions import PreventUpdate
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.api import task_summary
from core.audit import DENIED, REFUSED, record
from core.errors import InvalidInput, SwitchyardError
from core.permissions import CANCEL_PERMISSION, RETRY_PERMISSION, UPGRADE_PERMISSIONS, Permission
from core.priority import BUCKETS_IN_ORDER, PHASES, UpgradeAction
from core.users import authorize
from dashboard.common import acting_user, address, run_action
from db.models import TaskStatus
from db.queries import COUNT_CAP, TaskFilters, list_tasks

PATH = "/tasks"
TITLE = "Tasks"
PERMISSION = Permission.VIEW_TASKS

GRID_ID = "tasks-grid"
PAGE_SIZE = 100
MAX_BLOCK = 1000  # rows one request may ask for, whatever the browser says
MAX_OFFSET = 10**9
UPGRADES = tuple(a.value for a in UpgradeAction)  # prioritize, urgent, critical
ACTIONS = UPGRADES + ("cancel", "retry")
ACTION_LABELS = {
    "prioritize": "Prioritize",
    "urgent": "Urgent",
    "critical": "Critical",
    "cancel": "Cancel",
    "retry": "Retry",
}
PENDING_MAX_AGE = 600  # seconds a reason dialog stays valid
FILTERS = [
    ("tasks-filter-status", "Status"),
    ("tasks-filter-bucket", "Bucket"),
    ("tasks-filter-category", "Category"),
    ("tasks-filter-phase", "Phase"),
]


def matches(path: str) -> bool:
    return path == PATH


# -- what a user may do to a task -----------------------------------------------------------


def allowed_actions(status: str, priority: int, permissions: Iterable[Permission]) -> list[str]:
    """The actions to offer on one task: only those the role has and that would do something."""
    permissions = frozenset(permissions)
    actions: list[str] = []
    if status == TaskStatus.QUEUED:
        for upgrade in UpgradeAction:
            if UPGRADE_PERMISSIONS[upgrade] in permissions and int(upgrade.target) > int(priority):
                actions.append(upgrade.value)
        if CANCEL_PERMISSION in permissions:
            actions.append("cancel")
    elif status == TaskStatus.FAILED and RETRY_PERMISSION in permissions:
        actions.append("retry")
    return actions


def grid_row(row: dict[str, Any], permissions: Iterable[Permission]) -> dict[str, Any]:
    return {**task_summary(row), "actions": allowed_actions(row["status"], row["priority"], permissions)}


def fetch_rows(ctx, user, request: dict | None, filters: TaskFilters) -> dict[str, Any]:
    """The grid's getRowsResponse for one getRowsRequest."""
    request = request if isinstance(request, dict) else {}
    start = min(_int(request.get("startRow"), 0), MAX_OFFSET)
    end = min(_int(request.get("endRow"), start + PAGE_SIZE), start + MAX_BLOCK)
    with ctx.db.session() as session:
        rows, total = list_tasks(session, filters, request.get("sortModel"), start, end)
    return {"rowData": [grid_row(r, user.permissions) for r in rows], "rowCount": -1 if total is None else total}


def _int(value: Any, default: int) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError, OverflowError):
        return default


# -- performing actions ----------------------------------------------------------------------


def perform_action(ctx, user, task_id: Any, action: Any, reason: Any = None, *, client: str | None = None):
    """Ask core to do it as `user`; a dbc.Alert saying what happened or why not."""
    action = action if isinstance(action, str) else ""
    task_id = task_id if isinstance(task_id, str) else ""
    service = ctx.service

    def call():
        if action in UPGRADES:
            return service.upgrade_task(
                task_id, action, reason if isinstance(reason, str) else "", user.username, address=client
            )
        if action == "cancel":
            return service.cancel_task(task_id, user.username, address=client)
        if action == "retry":
            return service.retry_task(task_id, user.username, address=client)
        raise InvalidInput(f"unknown action {action[:16]!r}")

    def success(result) -> str:
        if action in UPGRADES:
            return result.describe()
        if action == "cancel":
            return f"task {task_id} cancelled"
        return f"task {task_id} queued again for a fresh set of attempts"

    return run_action(call, success)


def signer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="switchyard.task-action")


def sign_pending(serializer, user, task_id: str, action: str) -> str:
    return serializer.dumps({"user": user.username, "task": task_id, "action": action})


def check_pending(serializer, user, token: Any) -> tuple[tuple[str, str] | None, tuple[str, str, Any, str] | None]:
    """((task_id, action), None) if the token is ours, recent and was issued to this user;
    else (None, (outcome, action, target, detail)): the refusal to write to the audit log.

    Only the reason dialog sends a token, and only the one it was given: anything else (no
    token, a tampered one, another user's) is a forged or replayed request, denied."""

    def denied(detail: str, action: Any = None, target: Any = None):
        return None, (DENIED, action if action in UPGRADES else "upgrade", target, detail)

    if not isinstance(token, str) or not token:
        return denied("confirmation without a pending dialog")
    try:
        data = serializer.loads(token, max_age=PENDING_MAX_AGE)
    except SignatureExpired:
        return None, (REFUSED, "upgrade", None, f"confirmation older than {PENDING_MAX_AGE} s")
    except BadSignature:
        return denied("confirmation token forged or altered")
    if not isinstance(data, dict):
        return denied("confirmation token malformed")
    task_id, action, owner = data.get("task"), data.get("action"), data.get("user")
    target = task_id if isinstance(task_id, str) else None
    if owner != user.username:
        return denied(f"confirmation issued to {str(owner)[:64]!r} replayed by {user.username!r}", action, target)
    if target is None or action not in UPGRADES:
        return denied("confirmation token malformed", action, target)
    return (task_id, action), None


def _closed(reason_value=no_update):
    """Outputs of the shared action callbacks when nothing else changes: modal closed."""
    return False, None, no_update, reason_value, no_update, no_update


def request_action(ctx, serializer, user, task_id: Any, action: Any, *, client: str | None = None):
    """A click on an action button. Upgrades open the reason dialog; Cancel and Retry act now.

    Returns the shared outputs: (modal open, pending token, modal text, reason value, alert, done).
    """
    if not isinstance(task_id, str) or not task_id or action not in ACTIONS:
        raise PreventUpdate
    if action in UPGRADES:
        upgrade = UpgradeAction(action)
        try:  # no dialog for an upgrade the role may not make (core audits the denial)
            authorize(
                ctx.db, user.username, UPGRADE_PERMISSIONS[upgrade], action=action, target=task_id[:64], address=client
            )
        except SwitchyardError as error:
            alert = dbc.Alert(str(error), color="danger", dismissable=True, className="action-result")
            return False, None, no_update, no_update, alert, no_update
        target = upgrade.target
        text = [
            html.Span(f"{ACTION_LABELS[action]} task "),
            html.Code(task_id),
            html.Span(f": raise it to {int(target)} ({target.label}). Why?"),
        ]
        return True, sign_pending(serializer, user, task_id, action), text, "", no_update, no_update
    alert = perform_action(ctx, user, task_id, action, client=client)
    return False, None, no_update, no_update, alert, time.time_ns()


def confirm_action(ctx, serializer, user, token: Any, reason: Any, *, client: str | None = None):
    """The reason dialog's Confirm: run the pending upgrade, if the token is valid for this user."""
    pending, refusal = check_pending(serializer, user, token)
    if pending is None:
        outcome, action, target, detail = refusal
        record(
            ctx.db, actor=user.username, action=action, target=target, outcome=outcome, detail=detail, address=client
        )
        text = (
            "Not allowed: this confirmation was not issued to you. The attempt is in the audit log."
            if outcome == DENIED
            else "This confirmation is no longer valid: click the action again."
        )
        alert = dbc.Alert(text, color="danger", dismissable=True, className="action-result")
        return False, None, no_update, "", alert, no_update
    task_id, action = pending
    if not isinstance(reason, str) or not reason.strip():
        alert = dbc.Alert("An upgrade needs a reason.", color="warning", dismissable=True, className="action-result")
        return True, no_update, no_update, no_update, alert, no_update
    alert = perform_action(ctx, user, task_id, action, reason, client=client)
    return False, None, no_update, "", alert, time.time_ns()


def action_controls() -> html.Div:
    """The reason dialog, the pending store, the result alert and the "something changed" store."""
    return html.Div(
        [
            dcc.Store(id="task-action-pending"),
            dcc.Store(id="task-action-done"),
            dcc.Store(id="task-action-sink"),
            html.Div(id="task-action-result"),
            dbc.Modal(
                [
                    dbc.ModalHeader(dbc.ModalTitle("Give a reason")),
                    dbc.ModalBody(
                        [
                            html.P(id="reason-modal-text"),
                            dbc.Textarea(
                                id="reason-input",
                                placeholder="Why does this task need to go first? (kept in the priority history)",
                                maxLength=500,
                                rows=3,
                            ),
                        ]
                    ),
                    dbc.ModalFooter(
                        [
                            dbc.Button("Cancel", id="reason-cancel", color="secondary", outline=True),
                            dbc.Button("Confirm", id="reason-confirm", color="primary"),
                        ]
                    ),
                ],
                id="reason-modal",
                is_open=False,
                backdrop="static",
            ),
        ]
    )


SHARED_OUTPUTS = [
    Output("reason-modal", "is_open", allow_duplicate=True),
    Output("task-action-pending", "data", allow_duplicate=True),
    Output("reason-modal-text", "children", allow_duplicate=True),
    Output("reason-input", "value", allow_duplicate=True),
    Output("task-action-result", "children", allow_duplicate=True),
    Output("task-action-done", "data", allow_duplicate=True),
]


# -- layout ----------------------------------------------------------------------------------


def column_defs() -> list[dict]:
    # Sortable: the columns db.queries.SORT_COLUMNS has an index order for. Category, phase and
    # bucket are filtered on instead (sorting a million rows on three values says little).
    return [
        {"field": "id", "colId": "id", "headerName": "Id", "cellRenderer": "TaskLink", "width": 230},
        {
            "field": "created_at",
            "colId": "created",
            "headerName": "Created (UTC)",
            "width": 190,
            "valueFormatter": {"function": "params.value ? params.value.slice(0, 19).replace('T', ' ') : ''"},
        },
        {
            "field": "priority",
            "colId": "priority",
            "headerName": "Priority",
            "width": 130,
            "valueFormatter": {"function": "params.data ? params.value + ' · ' + params.data.priority_label : ''"},
        },
        {"field": "status", "colId": "status", "headerName": "Status", "width": 110},
        {"field": "name", "colId": "name", "headerName": "Name", "flex": 1, "minWidth": 150},
        {"field": "category", "colId": "category", "headerName": "Category", "width": 110, "sortable": False},
        {"field": "phase", "colId": "phase", "headerName": "Phase", "width": 110, "sortable": False},
        {"field": "bucket", "colId": "bucket", "headerName": "Bucket", "width": 100, "sortable": False},
        {
            "field": "attempts",
            "colId": "attempts",
            "headerName": "Attempts",
            "width": 105,
            "sortable": False,
            "valueFormatter": {"function": "params.data ? params.value + '/' + params.data.max_attempts : ''"},
        },
        {
            "field": "actions",
            "colId": "actions",
            "headerName": "Actions",
            "cellRenderer": "TaskActions",
            "sortable": False,
            "minWidth": 330,
            "pinned": "right",
        },
    ]


def layout(ctx, user, path):
    categories = list(ctx.runtime.settings.categories)
    options = {
        "tasks-filter-status": list(TaskStatus.ALL),
        "tasks-filter-bucket": [b.value for b in BUCKETS_IN_ORDER],
        "tasks-filter-category": categories,
        "tasks-filter-phase": list(PHASES),
    }
    controls = [
        dbc.Col(
            dcc.Dropdown(
                id=control_id,
                options=[{"label": o, "value": o} for o in options[control_id]],
                multi=True,
                placeholder=label,
            ),
            md=2,
        )
        for control_id, label in FILTERS
    ]
    controls.append(
        dbc.Col(
            dbc.Input(
                id="tasks-filter-text",
                placeholder="Id prefix, name or correlation id",
                debounce=True,
                maxLength=64,
                type="search",
            ),
            md=4,
        )
    )
    return html.Div(
        [
            html.H1("Tasks", className="h4 mb-3"),
            dbc.Row(controls, className="g-2 mb-2", id="tasks-filters"),
            html.Div(id="tasks-count", className="text-muted small mb-1"),
            action_controls(),
            dcc.Store(id="tasks-grid-sink"),
            dag.AgGrid(
                id=GRID_ID,
                rowModelType="infinite",
                columnDefs=column_defs(),
                defaultColDef={"sortable": True, "resizable": True, "suppressHeaderMenuButton": True},
                dashGridOptions={
                    "cacheBlockSize": PAGE_SIZE,
                    "maxBlocksInCache": 20,
                    "infiniteInitialRowCount": 1,
                    "maxConcurrentDatasourceRequests": 1,
                    "rowHeight": 34,
                    "suppressCellFocus": True,
                },
                getRowId="params.data.id",
                style={"height": "70vh", "width": "100%"},
                className="ag-theme-alpine",
            ),
        ]
    )


# -- callbacks -------------------------------------------------------------------------------


def register_callbacks(app, ctx) -> None:
    serializer = signer(app.server.secret_key)

    @app.callback(
        Output(GRID_ID, "getRowsResponse"),
        Output("tasks-count", "children"),
        Input(GRID_ID, "getRowsRequest"),
        State("tasks-filter-status", "value"),
        State("tasks-filter-bucket", "value"),
        State("tasks-filter-category", "value"),
        State("tasks-filter-phase", "value"),
        State("tasks-filter-text", "value"),
        prevent_initial_call=True,
    )
    def get_rows(request, statuses, buckets, categories, phases, text):
        if not isinstance(request, dict):
            raise PreventUpdate
        user = acting_user()
        filters = TaskFilters.from_inputs(statuses, buckets, categories, phases, text)
        response = fetch_rows(ctx, user, request, filters)
        count = response["rowCount"]
        words = f"{count:,} matching" if count >= 0 else f"more than {COUNT_CAP:,} matching"
        return response, words

    # Filters changed: drop the grid's cached blocks; it asks for rows again (with the new filters).
    app.clientside_callback(
        """function() {
            try { window.dash_ag_grid.getApi('tasks-grid').purgeInfiniteCache(); } catch (e) {}
            return window.dash_clientside.no_update;
        }""",
        Output("tasks-grid-sink", "data"),
        Input("tasks-filter-status", "value"),
        Input("tasks-filter-bucket", "value"),
        Input("tasks-filter-category", "value"),
        Input("tasks-filter-phase", "value"),
        Input("tasks-filter-text", "value"),
        prevent_initial_call=True,
    )

    # An action went through (on this page): reload the visible rows so they show it.
    app.clientside_callback(
        """function(done) {
            if (done) { try { window.dash_ag_grid.getApi('tasks-grid').refreshInfiniteCache(); } catch (e) {} }
            return window.dash_clientside.no_update;
        }""",
        Output("task-action-sink", "data"),
        Input("task-action-done", "data"),
        prevent_initial_call=True,
    )

    @app.callback(*SHARED_OUTPUTS, Input(GRID_ID, "cellRendererData"), prevent_initial_call=True)
    def grid_action(data):
        # Guard on the triggering value (DESIGN section 8): a re-render carries no click.
        value = (data or {}).get("value") if isinstance(data, dict) else None
        if not isinstance(value, dict) or not value.get("nonce"):
            raise PreventUpdate
        return request_action(
            ctx, serializer, acting_user(), value.get("task_id"), value.get("action"), client=address()
        )

    @app.callback(
        *SHARED_OUTPUTS,
        Input("reason-confirm", "n_clicks"),
        Input("reason-cancel", "n_clicks"),
        State("task-action-pending", "data"),
        State("reason-input", "value"),
        prevent_initial_call=True,
    )
    def reason_dialog(confirm_clicks, cancel_clicks, token, reason):
        trigger = dash_ctx.triggered_id
        user = acting_user()
        if trigger == "reason-cancel" and cancel_clicks:
            return _closed("")
        if trigger == "reason-confirm" and confirm_clicks:
            return confirm_action(ctx, serializer, user, token, reason, client=address())
        raise PreventUpdate


def detail_action_input():
    """The task page's action buttons (pattern ids), for its own click callback."""
    return Input({"type": "task-action", "action": ALL, "task": ALL}, "n_clicks")
