"""The web console: a Flask server with sign-in, and a Dash app on top of it.

Pages live in dashboard/pages, one module each, exposing PATH, TITLE, PERMISSION (None: any
signed-in user), `layout(ctx, user, path, query)` and `register_callbacks(app, ctx)`; `query` is
the URL's query string as a dict of lists (a filtered view can be shared and reloaded). Callbacks are registered on this
app instance (never with the global @dash.callback), so every create_app() gets its own.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import parse_qs

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html
from flask import Flask

from core.auth.policy import authorize
from core.auth.sessions import SessionLimits
from core.auth.signin import LoginLimits
from core.errors import NotAllowed
from core.observe.snapshot import OverviewSnapshot
from core.runtime import Runtime
from core.settings import Settings
from dashboard.api import install_api
from dashboard.auth import acting_user_or_none, client_address, csrf_token, install_auth
from dashboard.components.common import ConsoleContext
from dashboard.guard import install_request_checks, page_callbacks, seal
from dashboard.limits import RESERVED_THREADS, ReadGate
from dashboard.ops import install_ops
from dashboard.pages import account, history, overview, task_detail, tasks, tokens, users
from dashboard.security import ConsoleDash, check_secret_key, install_security, set_script_hashes

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PAGES = [overview, tasks, task_detail, history, users, tokens, account]
NAV_PAGES = [overview, tasks, history, users]


def secret_key(settings: Settings) -> str:
    """The configured key, else (development only) one generated once and kept in the data folder."""
    check_secret_key(settings)
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


def create_app(settings: Settings, runtime: Runtime) -> dash.Dash:
    server = Flask("switchyard", static_folder=None)  # no /static route: Dash serves the assets
    server.config.update(SECRET_KEY=secret_key(settings))
    gate = ReadGate(settings.web_threads - RESERVED_THREADS)
    ctx = ConsoleContext(runtime, OverviewSnapshot(runtime.db, runtime.broker), gate)
    install_ops(server, settings, ctx)  # first: every request gets its id before anything answers
    install_security(server, settings, runtime.db)  # headers, same-origin POSTs, cookies, errors
    install_auth(server, runtime.db, LoginLimits.from_settings(settings), SessionLimits.from_settings(settings))
    install_api(server, runtime, gate)

    app = ConsoleDash(
        "switchyard",
        server=server,
        assets_folder=str(ASSETS),
        title="Switchyard",
        update_title=None,
        suppress_callback_exceptions=True,
        serve_locally=True,
        enable_mcp=False,  # whatever DASH_MCP_ENABLED says (docs/architecture.md, "Dash traps")
    )
    app.layout = lambda: _shell()
    app.index_string = app.index_string.replace("<html>", '<html lang="en">')

    with page_callbacks(app, runtime.db, "app", None):

        @app.callback(
            Output("page", "children"),
            Output("navbar", "children"),
            Input("url", "pathname"),
            State("url", "search"),
        )
        def route(pathname: str, search: str):
            user = acting_user_or_none()
            if user is None:
                return html.Div("Sign in first.", className="p-4"), None
            path = pathname if isinstance(pathname, str) and pathname else "/"
            page = next((p for p in PAGES if p.matches(path)), None)
            navbar = _navbar(user, path)
            if page is None:
                return _message("Not found", f"There is no page at {path[:200]}."), navbar
            if page.PERMISSION is not None:
                try:
                    authorize(
                        runtime.db, user, page.PERMISSION, action="view", target=path[:128], address=client_address()
                    )
                except NotAllowed:
                    return _message("Not allowed", f"Your role ({user.role.value}) cannot open {page.TITLE}."), navbar
            query = parse_qs(search[1:] if isinstance(search, str) and search.startswith("?") else "")
            return page.layout(ctx, user, path, query), navbar

    for page in PAGES:
        with page_callbacks(app, runtime.db, page.__name__.rsplit(".", 1)[-1], page.PERMISSION):
            page.register_callbacks(app, ctx)
    seal(app)
    install_request_checks(app)
    set_script_hashes(server, list(app.csp_hashes()))  # after the last clientside callback
    return app


def _shell() -> html.Div:
    return html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            html.Div(id="navbar"),
            html.Main(dbc.Container(html.Div(id="page"), fluid=True, className="py-3")),
        ]
    )


def _navbar(user, pathname: str) -> dbc.Navbar:
    links = [
        dbc.NavItem(
            dbc.NavLink(p.TITLE, href=p.PATH, active=p.matches(pathname), id=f"nav-{p.__name__.rsplit('.', 1)[-1]}")
        )
        for p in NAV_PAGES
        if user.can(p.PERMISSION)
    ]
    own = [
        # The user's own settings sit by their name, not among the pages.
        dcc.Link(account.TITLE, href=account.PATH, className="btn btn-outline-light btn-sm me-2", id="nav-account")
    ]
    if user.can(tokens.PERMISSION):
        own.append(
            dcc.Link(tokens.TITLE, href=tokens.PATH, className="btn btn-outline-light btn-sm me-2", id="nav-tokens")
        )
    sign_out = html.Form(
        [
            dcc.Input(type="hidden", name="csrf_token", value=csrf_token()),
            html.Span(f"{user.username} · {user.role.value}", className="navbar-text me-3", id="whoami"),
            # Where console.js reads the zone it shows times in ("last updated" in a banner).
            html.Span(id="user-time-zone", hidden=True, **{"data-zone": user.time_zone}),
            *own,
            html.Button("Sign out", className="btn btn-outline-light btn-sm", id="sign-out", type="submit"),
        ],
        method="POST",
        action="/logout",
        className="d-flex align-items-center",
    )
    return dbc.Navbar(
        dbc.Container(
            [dbc.NavbarBrand("Switchyard", href="/"), dbc.Nav(links, className="me-auto"), sign_out], fluid=True
        ),
        color="dark",
        dark=True,
    )


def _message(title: str, text: str) -> html.Div:
    return html.Div([html.H2(title, className="h4"), html.P(text)], className="p-4")
