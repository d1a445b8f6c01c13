"""The task-actions dialog both task pages share: the action buttons' requests, the reason
dialog for upgrades, the signed pending-action token, and the one-line result.

A click asks `request_action`: Cancel and Retry act at once; an upgrade opens the reason dialog
with a pending upgrade held in the browser as a token signed with the app's secret key and bound
to the user who opened it, so a forged or replayed confirmation for another task, action or user
is refused (and audited) before core is even asked. Core checks the permission again on every
call: the buttons are a convenience, never the check.
"""

from __future__ import annotations

import time
from typing import Any

import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx
from dash.exceptions import PreventUpdate

from core.auth.confirmations import redeem_pending, sign_pending, signer
from core.auth.permissions import UPGRADE_PERMISSIONS
from core.auth.policy import authorize
from core.errors import InvalidInput, NotAllowed, SwitchyardError
from core.priority import UpgradeAction
from core.tasks.reads import ACTIONS, UPGRADES
from dashboard.components.common import acting_user, address, run_action

ACTION_LABELS = {
    "prioritize": "Prioritize",
    "urgent": "Urgent",
    "critical": "Critical",
    "cancel": "Cancel",
    "retry": "Retry",
}
__all__ = ["signer", "sign_pending", "request_action", "confirm_action", "perform_action", "action_controls"]


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
    try:
        task_id, action = redeem_pending(ctx.db, serializer, user, token, address=client)
    except SwitchyardError as error:
        text = (
            "Not allowed: this confirmation was not issued to you. The attempt is in the audit log."
            if isinstance(error, NotAllowed)
            else "This confirmation is no longer valid: click the action again."
        )
        alert = dbc.Alert(text, color="danger", dismissable=True, className="action-result")
        return False, None, no_update, "", alert, no_update
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


def register_callbacks(app, ctx) -> None:
    """The reason dialog's Confirm and Cancel (registered once per app, by the Tasks page)."""
    serializer = signer(app.server.secret_key)

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
