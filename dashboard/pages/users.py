"""Users: list, create, change role, disable/enable, reset password. Admins only (manage_users).

Every action goes through core.user_admin as the signed-in user; the page hiding itself from
other roles is never the check. The per-user controls act on the user chosen in one dropdown
("target-user"), so re-rendering the list can never fire an action (docs/architecture.md, "Dash traps"); all
action callbacks use prevent_initial_call and guard on the clicked button's n_clicks.

Element ids for browser tests:
  users-table (rows carry data-username), users-result (the outcome alert),
  new-username, new-password, new-role, create-user,
  target-user, target-role, change-role, toggle-active, reset-password-input, reset-password.
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback_context, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core.auth import user_admin
from core.auth.permissions import Permission, Role
from core.errors import SwitchyardError
from core.timefmt import when
from dashboard.components.common import acting_user, address, confirm_dialog, next_refresh, run_action

PATH = "/users"
TITLE = "Users"
PERMISSION = Permission.MANAGE_USERS

ROLES = [r.value for r in Role]
ACTION_BUTTONS = ("create-user", "change-role", "toggle-active", "reset-password", "disable-confirm")


def matches(path: str) -> bool:
    return path == PATH


def _users_data(users) -> list[dict]:
    return [{"username": u.username, "role": u.role, "active": u.active} for u in users]


def _table(users, zone: str) -> dbc.Table:
    header = html.Tr([html.Th("user"), html.Th("role"), html.Th("active"), html.Th("created"), html.Th("last sign-in")])
    rows = [
        html.Tr(
            [
                html.Td(u.username),  # plain text: Dash escapes it
                html.Td(u.role),
                html.Td("yes" if u.active else "disabled", className="" if u.active else "text-danger"),
                html.Td(when(u.created_at, zone)),
                html.Td(when(u.last_login_at, zone, empty="never")),
            ],
            **{"data-username": u.username},
        )
        for u in users
    ]
    return dbc.Table([html.Thead(header), html.Tbody(rows)], size="sm", hover=True, id="users-table", className="mb-0")


def _entry(users_data, username) -> dict | None:
    """The browser's copy of one user's row (it sent users-data back: anything may be in it)."""
    if not isinstance(users_data, list) or not isinstance(username, str):
        return None
    for entry in users_data:
        if isinstance(entry, dict) and entry.get("username") == username:
            active, role = entry.get("active"), entry.get("role")
            if isinstance(active, bool) and role in ROLES:
                return {"username": username, "active": active, "role": role}
    return None


def _options(values) -> list[dict]:
    return [{"label": v, "value": v} for v in values]


def _list(ctx, user):
    users = user_admin.list_users(ctx.db, user.username, address=address())
    return _table(users, user.time_zone), _users_data(users), [u.username for u in users]


def layout(ctx, user, path, query=None):
    try:
        table, data, names = _list(ctx, user)
        load_error = None
    except SwitchyardError as error:
        table, data, names = html.Div(id="users-table"), [], []
        load_error = dbc.Alert(str(error), color="danger")

    create_form = dbc.Card(
        [
            dbc.CardHeader("Create a user"),
            dbc.CardBody(
                dbc.Form(
                    [
                        dbc.Label("User name", html_for="new-username"),
                        dbc.Input(id="new-username", type="text", maxLength=64, autoComplete="off", className="mb-2"),
                        dbc.Label("Role", html_for="new-role"),
                        dbc.Select(id="new-role", options=_options(ROLES), value=Role.VIEWER.value, className="mb-2"),
                        dbc.Label("Password (8 characters or more)", html_for="new-password"),
                        dbc.Input(id="new-password", type="password", autoComplete="new-password", className="mb-3"),
                        dbc.Button("Create user", id="create-user", color="primary", type="submit"),
                    ],
                    id="create-user-form",
                    prevent_default_on_submit=True,
                )
            ),
        ]
    )
    manage_form = dbc.Card(
        [
            dbc.CardHeader("Change a user"),
            dbc.CardBody(
                [
                    dbc.Label("User", html_for="target-user"),
                    dbc.Select(
                        id="target-user", options=_options(names), placeholder="choose a user", className="mb-3"
                    ),
                    dbc.Label("Role", html_for="target-role"),
                    dbc.InputGroup(
                        [
                            dbc.Select(id="target-role", options=_options(ROLES)),
                            dbc.Button("Change role", id="change-role", color="primary"),
                        ],
                        className="mb-3",
                    ),
                    dbc.Label("Sign-in", html_for="toggle-active"),
                    html.Div(
                        dbc.Button("Disable", id="toggle-active", color="warning", disabled=True), className="mb-3"
                    ),
                    dbc.Form(
                        [
                            dbc.Label("New password", html_for="reset-password-input"),
                            dbc.InputGroup(
                                [
                                    dbc.Input(id="reset-password-input", type="password", autoComplete="new-password"),
                                    dbc.Button("Reset password", id="reset-password", color="danger", type="submit"),
                                ]
                            ),
                        ],
                        id="reset-password-form",
                        prevent_default_on_submit=True,
                    ),
                    dbc.FormText("Changing the role, disabling or resetting the password signs the user out."),
                ]
            ),
        ]
    )
    return html.Div(
        [
            html.H1("Users", className="h4 mb-3"),
            dcc.Store(id="users-data", data=data),
            dcc.Store(id="users-refresh", data=0),
            html.Div(load_error, id="users-result", role="status"),
            confirm_dialog("disable", "Disable this user?", "Disable user"),
            dbc.Row(
                [
                    dbc.Col(dbc.Card([dbc.CardHeader("All users"), dbc.CardBody(table, id="users-list")]), lg=6),
                    dbc.Col(create_form, lg=3),
                    dbc.Col(manage_form, lg=3),
                ],
                className="g-3",
            ),
        ]
    )


def register_callbacks(app, ctx) -> None:
    @app.callback(
        Output("users-result", "children"),
        Output("users-refresh", "data"),
        Output("new-username", "value"),
        Output("new-password", "value"),
        Output("reset-password-input", "value"),
        Output("disable-modal", "is_open"),
        *[Input(button, "n_clicks") for button in ACTION_BUTTONS],
        State("new-username", "value"),
        State("new-password", "value"),
        State("new-role", "value"),
        State("target-user", "value"),
        State("target-role", "value"),
        State("users-data", "data"),
        State("reset-password-input", "value"),
        State("users-refresh", "data"),
        prevent_initial_call=True,
    )
    def act(
        create_clicks,
        role_clicks,
        toggle_clicks,
        reset_clicks,
        disable_clicks,
        new_username,
        new_password,
        new_role,
        target,
        target_role,
        users_data,
        reset_input,
        refresh_count,
    ):
        user = acting_user()
        clicked = callback_context.triggered_id
        clicks = dict(zip(ACTION_BUTTONS, (create_clicks, role_clicks, toggle_clicks, reset_clicks, disable_clicks)))
        if clicked not in clicks or not clicks[clicked]:
            raise PreventUpdate  # a re-render, not a click
        # Only users with manage_users get here (the page's permission, dashboard.callbacks); core
        # checks it again in the same transaction as the change.
        actor, where = user.username, address()
        keep_name, keep_password, keep_reset = new_username, new_password, reset_input
        if clicked == "create-user":
            result = run_action(
                lambda: user_admin.create_user(ctx.db, actor, new_username, new_password, new_role, address=where),
                lambda info: f"Created {info.username} ({info.role}).",
            )
            if result.color == "success":
                keep_name, keep_password = "", ""
            else:
                keep_password = ""
        elif clicked == "change-role":
            result = run_action(
                lambda: user_admin.change_role(ctx.db, actor, target, target_role, address=where),
                lambda info: f"{info.username} is now {info.role}; their sessions have ended.",
            )
        elif clicked in ("toggle-active", "disable-confirm"):
            current = _entry(users_data, target)
            if clicked == "toggle-active" and (current is None or current["active"]):
                raise PreventUpdate  # disabling is confirmed first (the dialog's own callback)
            # The button says what it will do; core refuses if the state changed meanwhile.
            wanted = clicked == "toggle-active"
            result = run_action(
                lambda: user_admin.set_active(ctx.db, actor, target, wanted, address=where),
                lambda info: f"{info.username} is {'enabled' if info.active else 'disabled and signed out'}.",
            )
        else:
            result = run_action(
                lambda: user_admin.reset_password(ctx.db, actor, target, reset_input, address=where),
                lambda info: f"New password set for {info.username}; their sessions have ended.",
            )
            keep_reset = ""
        return result, next_refresh(refresh_count), keep_name, keep_password, keep_reset, False

    @app.callback(
        Output("disable-modal", "is_open", allow_duplicate=True),
        Output("disable-modal-text", "children"),
        Input("toggle-active", "n_clicks"),
        Input("disable-close", "n_clicks"),
        State("target-user", "value"),
        State("users-data", "data"),
        prevent_initial_call=True,
    )
    def confirm_disable(toggle_clicks, close_clicks, target, users_data):
        """Disabling signs the user out everywhere: it asks first."""
        acting_user()
        if callback_context.triggered_id == "disable-close" and close_clicks:
            return False, no_update
        current = _entry(users_data, target)
        if not toggle_clicks or current is None or not current["active"]:
            raise PreventUpdate
        return True, f"{current['username']} is signed out everywhere and cannot sign in until enabled again."

    @app.callback(
        Output("users-list", "children"),
        Output("users-data", "data"),
        Output("target-user", "options"),
        Input("users-refresh", "data"),
        prevent_initial_call=True,
    )
    def refresh(_count):
        user = acting_user()
        if not user.can(Permission.MANAGE_USERS):
            raise PreventUpdate
        try:
            table, data, names = _list(ctx, user)
            return table, data, _options(names)
        except SwitchyardError as error:
            return dbc.Alert(str(error), color="danger"), [], []

    @app.callback(
        Output("toggle-active", "children"),
        Output("toggle-active", "color"),
        Output("toggle-active", "disabled"),
        Output("target-role", "value"),
        Input("target-user", "value"),
        Input("users-data", "data"),
    )
    def selected(target, users_data):
        acting_user()
        current = _entry(users_data, target)
        if current is None:
            return "Disable", "warning", True, None
        if current["active"]:
            return "Disable", "warning", False, current["role"]
        return "Enable", "success", False, current["role"]
