"""My account: every signed-in user changes their own password (the current one required),
chooses how times are shown (UTC or their browser's time zone, remembered), sees their sessions
and signs the others out. Everything goes through core.auth.account as the signed-in user.

Element ids for browser tests: account-zone, account-zone-save, account-current, account-new,
account-repeat, account-password-form, account-sessions, account-sign-out-others, account-result.
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback_context, dcc, html
from dash.exceptions import PreventUpdate

from core.auth import account
from core.errors import InvalidInput, SwitchyardError
from core.timefmt import UTC, when
from dashboard.components.common import acting_user, address, next_refresh, run_action

PATH = "/account"
TITLE = "My account"
PERMISSION = None  # any signed-in user, for their own account


def matches(path: str) -> bool:
    return path == PATH


def _sessions(ctx, user):
    try:
        sessions = account.my_sessions(ctx.db, user.username, user.session_token)
    except SwitchyardError as error:
        return dbc.Alert(str(error), color="danger")
    rows = [
        html.Tr(
            [
                html.Td(when(s.created_at, user.time_zone)),
                html.Td(when(s.last_seen_at or s.created_at, user.time_zone)),
                html.Td(s.address or "–"),
                html.Td(dbc.Badge("this browser", color="primary") if s.current else ""),
            ]
        )
        for s in sessions
    ]
    header = html.Tr([html.Th("signed in"), html.Th("last seen"), html.Th("address"), html.Th("")])
    return dbc.Table([html.Thead(header), html.Tbody(rows)], size="sm", className="mb-0")


def layout(ctx, user, path, query=None):
    zone_form = dbc.Card(
        [
            dbc.CardHeader("Times"),
            dbc.CardBody(
                [
                    dbc.RadioItems(
                        id="account-zone",
                        options=[
                            {"label": "UTC", "value": UTC},
                            {"label": "My browser's time zone", "value": "browser"},
                        ],
                        value=UTC if user.time_zone == UTC else "browser",
                        className="mb-2",
                    ),
                    html.P(f"Now shown in: {user.time_zone}", className="small text-muted", id="account-zone-now"),
                    dbc.Button("Save", id="account-zone-save", color="primary", size="sm"),
                ]
            ),
        ]
    )
    password_form = dbc.Card(
        [
            dbc.CardHeader("Change my password"),
            dbc.CardBody(
                dbc.Form(
                    [
                        # A hidden user name field: password managers pair the passwords with it.
                        dcc.Input(
                            type="text",
                            value=user.username,
                            autoComplete="username",
                            style={"display": "none"},
                            name="username",
                            id="account-username",
                        ),
                        dbc.Label("Current password", html_for="account-current"),
                        dbc.Input(
                            id="account-current", type="password", autoComplete="current-password", className="mb-2"
                        ),
                        dbc.Label("New password (8 characters or more)", html_for="account-new"),
                        dbc.Input(id="account-new", type="password", autoComplete="new-password", className="mb-2"),
                        dbc.Label("New password again", html_for="account-repeat"),
                        dbc.Input(id="account-repeat", type="password", autoComplete="new-password", className="mb-3"),
                        dbc.Button("Change password", id="account-password", color="primary", type="submit"),
                        dbc.FormText("Your other sessions end; this one stays signed in.", className="d-block"),
                    ],
                    id="account-password-form",
                    prevent_default_on_submit=True,
                )  # fmt: skip
            ),
        ]
    )
    sessions = dbc.Card(
        [
            dbc.CardHeader("My sessions"),
            dbc.CardBody(
                [
                    html.Div(_sessions(ctx, user), id="account-sessions", className="mb-3"),
                    dbc.Button("Sign out my other sessions", id="account-sign-out-others", color="warning",
                               outline=True, size="sm"),
                ]
            ),
        ]
    )  # fmt: skip
    return html.Div(
        [
            html.H1(f"My account: {user.username} ({user.role.value})", className="h4 mb-3"),
            dcc.Store(id="account-browser-zone"),
            dcc.Store(id="account-refresh", data=0),
            dcc.Store(id="account-reload"),
            html.Div(id="account-result", role="status"),
            dbc.Row([dbc.Col(password_form, lg=4), dbc.Col(zone_form, lg=3), dbc.Col(sessions, lg=5)], className="g-3"),
        ]
    )


def register_callbacks(app, ctx) -> None:
    app.clientside_callback(
        "function(_) { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || null; }"
        " catch (e) { return null; } }",
        Output("account-browser-zone", "data"),
        Input("account-zone", "id"),
    )

    @app.callback(
        Output("account-result", "children"),
        Output("account-refresh", "data"),
        Output("account-current", "value"),
        Output("account-new", "value"),
        Output("account-repeat", "value"),
        Output("account-reload", "data"),
        Input("account-zone-save", "n_clicks"),
        Input("account-password-form", "n_submit"),
        Input("account-sign-out-others", "n_clicks"),
        State("account-zone", "value"),
        State("account-browser-zone", "data"),
        State("account-current", "value"),
        State("account-new", "value"),
        State("account-repeat", "value"),
        State("account-refresh", "data"),
        prevent_initial_call=True,
    )
    def act(save, submit, sign_out, choice, browser_zone, current, new, repeat, count):
        user = acting_user()
        clicked = callback_context.triggered_id
        values = {"account-zone-save": save, "account-password-form": submit, "account-sign-out-others": sign_out}
        if clicked not in values or not values[clicked]:
            raise PreventUpdate
        where = address()
        if clicked == "account-zone-save":
            zone = UTC if choice == UTC else browser_zone
            result = run_action(
                lambda: account.set_time_zone(ctx.db, user.username, zone, address=where),
                lambda saved: f"Times are shown in {saved} from now on.",
            )
            return result, next_refresh(count), current, new, repeat, result.color == "success"
        if clicked == "account-sign-out-others":
            result = run_action(
                lambda: account.sign_out_others(ctx.db, user.username, user.session_token, address=where),
                lambda ended: f"{ended} other session(s) signed out.",
            )
            return result, next_refresh(count), current, new, repeat, False

        def change():
            if new != repeat:
                raise InvalidInput("the two new passwords differ")
            account.change_password(ctx.db, user.username, current, new, keep=user.session_token, address=where)

        result = run_action(change, lambda _: "Password changed; your other sessions have ended.")
        return result, next_refresh(count), "", "", "", False

    # Every time on every page is drawn in the chosen zone: show them anew once it is saved.
    app.clientside_callback(
        "function(saved) { if (saved) { window.setTimeout(function () { window.location.reload(); }, 800); }"
        " return window.dash_clientside.no_update; }",
        Output("account-reload", "data", allow_duplicate=True),
        Input("account-reload", "data"),
        prevent_initial_call=True,
    )

    @app.callback(Output("account-sessions", "children"), Input("account-refresh", "data"), prevent_initial_call=True)
    def refresh(_count):
        return _sessions(ctx, acting_user())
