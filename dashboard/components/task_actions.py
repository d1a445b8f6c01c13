"""The task-actions dialog both task pages share: what a click on an action button asks, the
confirmation dialog, the signed pending-action token, and the one-line result.

Every action is confirmed in the dialog: an upgrade with its reason (required, kept in the
priority history), a cancel with an optional reason (kept in the audit log), a retry with a
plain yes. The pending action is held in the browser as a token signed with the app's secret
key and bound to the user who opened the dialog, so a forged or replayed confirmation for another
task, action or user is refused (and audited) before core is even asked. Core checks the
permission again on every call: the buttons are a convenience, never the check.

Keyboard: the reason box takes focus when the dialog opens, Ctrl+Enter confirms, Esc closes
(assets/console.js).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx
from dash.exceptions import PreventUpdate

from core.auth.confirmations import redeem_pending, sign_pending, signer
from core.auth.permissions import CANCEL_PERMISSION, RETRY_PERMISSION, UPGRADE_PERMISSIONS
from core.auth.policy import authorize
from core.errors import InvalidInput, NotAllowed, SwitchyardError
from core.priority import UpgradeAction
from core.tasks.reads import ACTIONS, UPGRADES
from dashboard.components.common import acting_user, address, run_action

__all__ = ["signer", "sign_pending", "request_action", "confirm_action", "perform_action", "action_controls"]

ACTION_LABELS = {
    "prioritize": "Prioritize",
    "urgent": "Urgent",
    "critical": "Critical",
    "cancel": "Cancel task",
    "retry": "Retry",
}
# The buttons' looks, as the grid's renderer has them (assets/dashAgGridComponentFunctions.js).
ACTION_STYLES = {
    "prioritize": "btn-outline-primary",
    "urgent": "btn-outline-urgent",
    "critical": "btn-outline-danger",
    "cancel": "btn-outline-secondary",
    "retry": "btn-outline-success",
}
PERMISSIONS = {**{a.value: p for a, p in UPGRADE_PERMISSIONS.items()}, "cancel": CANCEL_PERMISSION,
               "retry": RETRY_PERMISSION}  # fmt: skip
SHOW: dict[str, str] = {}
HIDE = {"display": "none"}


@dataclass
class Dialog:
    """What one action callback changes: the dialog, the pending token, the page's result line,
    and the "something changed" store the page refreshes on."""

    open: Any = no_update
    token: Any = no_update
    title: Any = no_update
    text: Any = no_update
    reason: Any = no_update
    reason_label: Any = no_update
    reason_style: Any = no_update
    confirm_label: Any = no_update
    feedback: Any = no_update
    result: Any = no_update
    done: Any = no_update

    def outputs(self) -> tuple:
        return (
            self.open, self.token, self.title, self.text, self.reason, self.reason_label, self.reason_style,
            self.confirm_label, self.feedback, self.result, self.done,
        )  # fmt: skip


SHARED_OUTPUTS = [
    Output("reason-modal", "is_open", allow_duplicate=True),
    Output("task-action-pending", "data", allow_duplicate=True),
    Output("reason-modal-title", "children", allow_duplicate=True),
    Output("reason-modal-text", "children", allow_duplicate=True),
    Output("reason-input", "value", allow_duplicate=True),
    Output("reason-label", "children", allow_duplicate=True),
    Output("reason-field", "style", allow_duplicate=True),
    Output("reason-confirm", "children", allow_duplicate=True),
    Output("reason-feedback", "children", allow_duplicate=True),
    Output("task-action-result", "children", allow_duplicate=True),
    Output("task-action-done", "data", allow_duplicate=True),
]


def _alert(text: str, color: str = "danger", **extra: Any) -> dbc.Alert:
    return dbc.Alert(text, color=color, dismissable=True, className="action-result", **extra)


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
            return service.cancel_task(task_id, user.username, address=client, reason=reason)
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


def request_action(ctx, serializer, user, task_id: Any, action: Any, *, client: str | None = None) -> tuple:
    """A click on an action button: the confirmation dialog for it (the SHARED_OUTPUTS)."""
    if not isinstance(task_id, str) or not task_id or action not in ACTIONS:
        raise PreventUpdate
    try:  # no dialog for an action the role may not take (core audits the denial)
        authorize(ctx.db, user.username, PERMISSIONS[action], action=action, target=task_id[:64], address=client)
    except SwitchyardError as error:
        return Dialog(open=False, token=None, result=_alert(str(error))).outputs()
    task = [html.Code(task_id, className="text-break")]
    if action in UPGRADES:
        target = UpgradeAction(action).target
        dialog = Dialog(
            title=f"{ACTION_LABELS[action]}: raise to {int(target)} ({target.label})",
            text=[html.Span("Task "), *task, html.Span(" goes to the high bucket, ahead of everything below it.")],
            reason_label="Why does it need to go first? (required, kept in the priority history)",
            reason_style=SHOW,
            confirm_label=ACTION_LABELS[action],
        )
    elif action == "cancel":
        dialog = Dialog(
            title="Cancel this task?",
            text=[html.Span("Task "), *task, html.Span(" will not run. This cannot be undone.")],
            reason_label="Why? (optional, kept in the audit log)",
            reason_style=SHOW,
            confirm_label="Cancel task",
        )
    else:
        dialog = Dialog(
            title="Retry this task?",
            text=[html.Span("Task "), *task, html.Span(" runs again at its priority, with a fresh set of attempts.")],
            reason_style=HIDE,
            confirm_label="Retry task",
        )
    dialog.open, dialog.token, dialog.reason, dialog.feedback = (
        True,
        sign_pending(serializer, user, task_id, action),
        "",
        None,
    )
    return dialog.outputs()


def confirm_action(ctx, serializer, user, token: Any, reason: Any, *, client: str | None = None) -> tuple:
    """The dialog's confirm button: run the pending action, if the token is valid for this user."""
    try:
        task_id, action = redeem_pending(ctx.db, serializer, user, token, address=client)
    except SwitchyardError as error:
        text = (
            "Not allowed: this confirmation was not issued to you. The attempt is in the audit log."
            if isinstance(error, NotAllowed)
            else "This confirmation is no longer valid: click the action again."
        )
        return Dialog(open=False, token=None, reason="", result=_alert(text)).outputs()
    if action in UPGRADES and (not isinstance(reason, str) or not reason.strip()):
        feedback = dbc.Alert("An upgrade needs a reason.", color="warning", className="py-2 mb-0 mt-2")
        return Dialog(feedback=feedback).outputs()
    result = perform_action(ctx, user, task_id, action, reason, client=client)
    return Dialog(open=False, token=None, reason="", feedback=None, result=result, done=time.time_ns()).outputs()


def closed() -> tuple:
    """The dialog closed without acting."""
    return Dialog(open=False, token=None, reason="", feedback=None).outputs()


def action_controls() -> html.Div:
    """The confirmation dialog, the pending store, the result line and the "something changed" store."""
    return html.Div(
        [
            dcc.Store(id="task-action-pending"),
            dcc.Store(id="task-action-done"),
            dcc.Store(id="task-action-sink"),
            html.Div(id="task-action-result", role="status"),
            dbc.Modal(
                [
                    dbc.ModalHeader(dbc.ModalTitle("Confirm", id="reason-modal-title")),
                    dbc.ModalBody(
                        [
                            html.P(id="reason-modal-text"),
                            html.Div(
                                [
                                    dbc.Label("Reason", id="reason-label", html_for="reason-input"),
                                    dbc.Textarea(id="reason-input", maxLength=500, rows=3),
                                    dbc.FormText("Ctrl+Enter confirms, Esc closes."),
                                ],
                                id="reason-field",
                            ),
                            html.Div(id="reason-feedback", role="alert"),
                        ]
                    ),
                    dbc.ModalFooter(
                        [
                            dbc.Button("Close", id="reason-close", color="secondary", outline=True),
                            dbc.Button("Confirm", id="reason-confirm", color="primary"),
                        ]
                    ),
                ],
                id="reason-modal",
                labelledby="reason-modal-title",
                is_open=False,
                backdrop="static",
                keyboard=True,
            ),
        ]
    )


def register_callbacks(app, ctx) -> None:
    """The dialog's Confirm and Close (registered once per app, by the Tasks page)."""
    serializer = signer(app.server.secret_key)

    @app.callback(
        *SHARED_OUTPUTS,
        Input("reason-confirm", "n_clicks"),
        Input("reason-close", "n_clicks"),
        State("task-action-pending", "data"),
        State("reason-input", "value"),
        prevent_initial_call=True,
    )
    def reason_dialog(confirm_clicks, close_clicks, token, reason):
        trigger = dash_ctx.triggered_id
        user = acting_user()
        if trigger == "reason-close" and close_clicks:
            return closed()
        if trigger == "reason-confirm" and confirm_clicks:
            return confirm_action(ctx, serializer, user, token, reason, client=address())
        raise PreventUpdate
