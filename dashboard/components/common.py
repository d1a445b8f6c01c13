"""What every page shares: the console context, the acting user, turning core errors into words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import dash_bootstrap_components as dbc
from dash.exceptions import PreventUpdate

from core.errors import SwitchyardError
from core.observe.snapshot import OverviewSnapshot
from core.runtime import Runtime
from dashboard.auth import ConsoleUser, acting_user_or_none, client_address
from dashboard.limits import ReadGate


@dataclass
class ConsoleContext:
    runtime: Runtime
    snapshot: OverviewSnapshot
    gate: ReadGate  # seats for expensive reads (dashboard.limits)

    @property
    def service(self):
        return self.runtime.service

    @property
    def db(self):
        return self.runtime.db


SHORT_ID = 8  # the end of a task id: what tells tasks apart (the beginning is the creation time)


def short_id(task_id: str | None) -> str:
    return (task_id or "")[-SHORT_ID:]


def acting_user() -> ConsoleUser:
    """The signed-in user of this request. Callbacks act as this user and nobody else."""
    user = acting_user_or_none()
    if user is None:
        raise PreventUpdate
    return user


def run_action(action: Callable[[], Any], success: Callable[[Any], str]) -> dbc.Alert:
    """Call core; say what happened (or why not) in one line."""
    try:
        result = action()
    except SwitchyardError as error:
        return dbc.Alert(str(error), color="danger", dismissable=True, className="action-result")
    return dbc.Alert(success(result), color="success", dismissable=True, duration=8000, className="action-result")


def confirm_dialog(prefix: str, title: str, confirm_label: str) -> dbc.Modal:
    """A closed "are you sure?" dialog: {prefix}-modal, -modal-text, -close and -confirm."""
    return dbc.Modal(
        [
            dbc.ModalHeader(dbc.ModalTitle(title, id=f"{prefix}-modal-title")),
            dbc.ModalBody(id=f"{prefix}-modal-text"),
            dbc.ModalFooter(
                [
                    dbc.Button("Close", id=f"{prefix}-close", color="secondary", outline=True),
                    dbc.Button(confirm_label, id=f"{prefix}-confirm", color="danger"),
                ]
            ),
        ],
        id=f"{prefix}-modal",
        labelledby=f"{prefix}-modal-title",
        is_open=False,
    )


def next_refresh(count: Any) -> int:
    """The next value of a page's refresh counter store; a forged non-number starts over."""
    return count + 1 if isinstance(count, int) and not isinstance(count, bool) else 1


def address() -> str | None:
    return client_address()
