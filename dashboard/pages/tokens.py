"""API tokens: every user sees, creates and revokes their own; an admin (manage_users) sees
everyone's and can create or revoke one for anybody.

Everything goes through core.auth.tokens as the signed-in user, which checks ownership or
manage_users and audits; what this page shows or hides is never the check. A new token's
secret appears once, in the result alert, and is kept nowhere else (only its hash is stored).
Revoke acts on the token chosen in one dropdown ("token-target"), so re-rendering the list
can never fire it (docs/architecture.md, "Dash traps"); both action callbacks guard on the clicked button's
n_clicks.

Element ids for browser tests:
  tokens-table (rows carry data-prefix), tokens-result (the outcome alert), new-token-secret,
  token-name, token-owner (admins only; hidden otherwise), create-token, token-target, revoke-token
  (opens revoke-modal; revoke-confirm acts, revoke-close dismisses).
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback_context, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core.auth import tokens as api_tokens
from core.auth import user_admin
from core.auth.permissions import Permission
from core.errors import SwitchyardError
from core.timefmt import when
from dashboard.components.common import acting_user, address, confirm_dialog, next_refresh

PATH = "/tokens"
TITLE = "API tokens"
PERMISSION = Permission.VIEW_DASHBOARD  # every role: each user manages their own tokens

ACTION_BUTTONS = ("create-token", "revoke-confirm")
EVERYONE = "*"


def matches(path: str) -> bool:
    return path == PATH


def _table(tokens, show_owner: bool, zone: str) -> dbc.Table:
    headers = (["user"] if show_owner else []) + ["name", "prefix", "created", "by", "last used", "status"]
    rows = []
    for t in tokens:
        cells = [html.Td(t.username)] if show_owner else []
        cells += [
            html.Td(t.name),  # plain text: Dash escapes it
            html.Td(html.Code(t.prefix + "…")),
            html.Td(when(t.created_at, zone)),
            html.Td(t.created_by),
            html.Td(when(t.last_used_at, zone, empty="never")),
            html.Td(
                "active" if t.active else f"revoked {when(t.revoked_at, zone)}",
                className="" if t.active else "text-muted",
            ),
        ]
        rows.append(html.Tr(cells, **{"data-prefix": t.prefix}))
    if not rows:
        rows = [html.Tr(html.Td("No tokens yet.", colSpan=len(headers), className="text-muted"))]
    return dbc.Table(
        [html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(rows)],
        size="sm",
        hover=True,
        id="tokens-table",
        className="mb-0",
    )


def _target_options(tokens, show_owner: bool) -> list[dict]:
    def label(t) -> str:
        return f"{t.prefix}… {t.name}" + (f" ({t.username})" if show_owner else "")

    return [{"label": label(t), "value": str(t.id)} for t in tokens if t.active]


def _list(ctx, user):
    """(table, revoke options). Admins see every user's tokens; core decides whether they may."""
    everyone = user.can(Permission.MANAGE_USERS)
    tokens = api_tokens.list_tokens(ctx.db, user.username, EVERYONE if everyone else None, address=address())
    return _table(tokens, everyone, user.time_zone), _target_options(tokens, everyone)


def _option_label(options, value) -> str | None:
    """The label of the chosen token, from the browser's copy of the options (anything may be in it)."""
    if not isinstance(options, list) or not isinstance(value, str):
        return None
    for option in options:
        if isinstance(option, dict) and option.get("value") == value and isinstance(option.get("label"), str):
            return option["label"]
    return None


def _owner_options(ctx, user) -> list[dict]:
    if not user.can(Permission.MANAGE_USERS):
        return [{"label": user.username, "value": user.username}]
    try:
        users = user_admin.list_users(ctx.db, user.username, address=address())
    except SwitchyardError:
        return [{"label": user.username, "value": user.username}]
    return [{"label": u.username, "value": u.username} for u in users if u.active]


def layout(ctx, user, path, query=None):
    try:
        table, options = _list(ctx, user)
        load_error = None
    except SwitchyardError as error:
        table, options = html.Div(id="tokens-table"), []
        load_error = dbc.Alert(str(error), color="danger")
    is_admin = user.can(Permission.MANAGE_USERS)
    create_form = dbc.Card(
        [
            dbc.CardHeader("Create a token"),
            dbc.CardBody(
                dbc.Form(
                    [
                        html.Div(
                            [
                                dbc.Label("For user", html_for="token-owner"),
                                dbc.Select(
                                    id="token-owner",
                                    options=_owner_options(ctx, user),
                                    value=user.username,
                                    className="mb-2",
                                ),
                            ],
                            style=None if is_admin else {"display": "none"},
                        ),
                        dbc.Label("Name (what will use it)", html_for="token-name"),
                        dbc.Input(
                            id="token-name",
                            type="text",
                            maxLength=64,
                            autoComplete="off",
                            className="mb-3",
                            placeholder="e.g. nightly-etl",
                        ),
                        dbc.Button("Create token", id="create-token", color="primary", type="submit"),
                        dbc.FormText(
                            "The token acts as its user, with the user's role. It is shown once: copy it then.",
                            className="d-block mt-2",
                        ),
                    ],
                    id="create-token-form",
                    prevent_default_on_submit=True,
                )
            ),
        ]
    )
    revoke_form = dbc.Card(
        [
            dbc.CardHeader("Revoke a token"),
            dbc.CardBody(
                [
                    dbc.Label("Token", html_for="token-target"),
                    dbc.Select(id="token-target", options=options, placeholder="choose a token", className="mb-3"),
                    dbc.Button("Revoke", id="revoke-token", color="danger"),
                    dbc.FormText("A revoked token stops working at once.", className="d-block mt-2"),
                ]
            ),
        ]
    )
    return html.Div(
        [
            html.H1("API tokens", className="h4 mb-2"),
            html.P(
                [
                    "Services and scripts call the HTTP API under ",
                    html.Code("/api/v1"),
                    " with the header ",
                    html.Code("Authorization: Bearer <token>"),
                    " (docs/api.md).",
                ],
                className="text-muted",
            ),
            dcc.Store(id="tokens-refresh", data=0),
            html.Div(load_error, id="tokens-result", role="status"),
            confirm_dialog("revoke", "Revoke this token?", "Revoke token"),
            dbc.Row(
                [
                    dbc.Col(
                        dbc.Card(
                            [
                                dbc.CardHeader("All tokens" if is_admin else "Your tokens"),
                                dbc.CardBody(table, id="tokens-list"),
                            ]
                        ),
                        lg=6,
                    ),
                    dbc.Col(create_form, lg=3),
                    dbc.Col(revoke_form, lg=3),
                ],
                className="g-3",
            ),
        ]
    )


def _created(new) -> dbc.Alert:
    return dbc.Alert(
        [
            html.Div(f"Created token {new.info.name!r} for {new.info.username}. Copy it now: it is not shown again."),
            html.Code(new.secret, id="new-token-secret", className="d-block my-2 user-select-all"),
            dcc.Clipboard(target_id="new-token-secret", title="copy"),
        ],
        color="success",
        className="action-result",
    )


def register_callbacks(app, ctx) -> None:
    @app.callback(
        Output("tokens-result", "children"),
        Output("tokens-refresh", "data"),
        Output("token-name", "value"),
        Output("revoke-modal", "is_open"),
        *[Input(button, "n_clicks") for button in ACTION_BUTTONS],
        State("token-name", "value"),
        State("token-owner", "value"),
        State("token-target", "value"),
        State("tokens-refresh", "data"),
        prevent_initial_call=True,
    )
    def act(create_clicks, revoke_clicks, name, owner, target, refresh_count):
        user = acting_user()
        clicked = callback_context.triggered_id
        clicks = dict(zip(ACTION_BUTTONS, (create_clicks, revoke_clicks)))
        if clicked not in clicks or not clicks[clicked]:
            raise PreventUpdate  # a re-render, not a click
        where = address()
        keep_name = name
        try:
            if clicked == "create-token":
                new = api_tokens.create_token(ctx.db, user.username, owner or user.username, name, address=where)
                result, keep_name = _created(new), ""
            else:
                info = api_tokens.revoke_token(ctx.db, user.username, target, address=where)
                result = dbc.Alert(
                    f"Revoked {info.prefix}… ({info.name}) of {info.username}.",
                    color="success",
                    dismissable=True,
                    duration=8000,
                    className="action-result",
                )
        except SwitchyardError as error:
            result = dbc.Alert(str(error), color="danger", dismissable=True, className="action-result")
        return result, next_refresh(refresh_count), keep_name, False

    @app.callback(
        Output("revoke-modal", "is_open", allow_duplicate=True),
        Output("revoke-modal-text", "children"),
        Input("revoke-token", "n_clicks"),
        Input("revoke-close", "n_clicks"),
        State("token-target", "value"),
        State("token-target", "options"),
        prevent_initial_call=True,
    )
    def confirm_revoke(revoke_clicks, close_clicks, target, options):
        """A revoked token stops working at once and cannot come back: it asks first."""
        acting_user()
        if callback_context.triggered_id == "revoke-close" and close_clicks:
            return False, no_update
        label = _option_label(options, target)
        if not revoke_clicks or label is None:
            raise PreventUpdate
        return True, f"{label} stops working at once; whatever uses it gets 401 from then on. This cannot be undone."

    @app.callback(
        Output("tokens-list", "children"),
        Output("token-target", "options"),
        Input("tokens-refresh", "data"),
        prevent_initial_call=True,
    )
    def refresh(_count):
        user = acting_user()
        try:
            return _list(ctx, user)
        except SwitchyardError as error:
            return dbc.Alert(str(error), color="danger"), []
