"""Sign-in, sessions and CSRF for the console.

- /login is a plain Flask form (fields `username`, `password`, hidden `csrf_token`).
- /logout is a POST with the same token.
- Every other route needs a signed-in, active user whose password and role have not changed
  since the session began (the session carries the user's session_version).
- Dash's renderer sends the `_csrf_token` cookie back as an X-CSRFToken header on every
  callback POST (double-submit); a POST without the matching token is refused.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from urllib.parse import urlparse

from flask import Flask, Response, abort, jsonify, redirect, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from core.auth.permissions import Permission, Role
from core.auth.sessions import SessionLimits, end_session, prune_sessions, session_user
from core.auth.signin import LoginLimits, SignInThrottled, authenticate
from core.errors import NotAllowed
from core.runtime import Database
from dashboard.limits import RefusalLimiter, TooMany
from dashboard.security import API_PREFIX, audit_refusal, refuse

CSRF_COOKIE = "_csrf_token"
CSRF_HEADER = "X-CSRFToken"
PUBLIC_PREFIXES = ("/login", "/assets/", "/_dash-component-suites/", "/favicon.ico", "/healthz", "/readyz", "/metrics")
# The HTTP API (API_PREFIX) authenticates every request by bearer token (dashboard/api.py) and
# never by the session cookie, so neither the sign-in redirect nor CSRF applies to it.


@dataclass(frozen=True)
class ConsoleUser(UserMixin):
    """The signed-in user for one request; permissions come from the database each request."""

    session_token: str
    username: str
    role: Role
    permissions: frozenset[Permission]
    time_zone: str = "UTC"

    def get_id(self) -> str:
        return self.session_token

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def client_address() -> str | None:
    return request.remote_addr


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok(sent: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and sent and hmac.compare_digest(str(expected), str(sent)))


def _safe_next(target: str | None) -> str:
    if not target:
        return "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    # Browsers read "\\" as "/" and drop tabs and newlines: "/\\evil.example" leaves the site.
    if any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in target):
        return "/"
    return target


def install_auth(
    server: Flask, db: Database, limits: LoginLimits | None = None, sessions: SessionLimits = SessionLimits()
) -> None:
    manager = LoginManager()
    manager.init_app(server)
    anonymous = RefusalLimiter()  # console requests without a session, per address
    manager.session_protection = "basic"
    # The cookie lives as long as the longest a session may (the server ends it earlier when idle).
    server.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=sessions.max_seconds)

    @manager.user_loader
    def load_user(token: str) -> ConsoleUser | None:
        actor = session_user(db, token, sessions)
        if actor is None:
            return None
        return ConsoleUser(token, actor.username, actor.role, actor.permissions, actor.time_zone)

    @server.before_request
    def require_sign_in():
        path = request.path
        if path.startswith(PUBLIC_PREFIXES) or path.startswith(API_PREFIX):
            return None
        if not current_user.is_authenticated:
            if path.startswith("/_dash"):
                try:
                    anonymous.check(client_address())
                except TooMany as error:
                    return jsonify(error=str(error)), 429, {"Retry-After": str(error.retry_after)}
                anonymous.refused(client_address())
                return refuse(401, "sign in first")
            audit_refusal("sign in first")
            return redirect(f"/login?next={request.full_path if request.query_string else path}")
        if request.method == "POST" and not _csrf_ok(
            request.headers.get(CSRF_HEADER) or request.form.get("csrf_token")
        ):
            return refuse(403, "missing or wrong CSRF token")
        return None

    @server.after_request
    def send_csrf_cookie(response: Response) -> Response:
        if not request.path.startswith(API_PREFIX) and current_user.is_authenticated and "csrf" in session:
            # Not HttpOnly: Dash's renderer reads it to send the X-CSRFToken header.
            response.set_cookie(
                CSRF_COOKIE, session["csrf"], samesite="Strict", secure=request.is_secure, httponly=False
            )
        return response

    @server.route("/login", methods=["GET", "POST"])
    def login():
        message = ""
        if request.method == "POST":
            if not _csrf_ok(request.form.get("csrf_token")):
                audit_refusal("missing or wrong CSRF token")
                return _login_page("Missing or wrong form token: try again.", csrf_token()), 400
            try:
                signed_in = authenticate(
                    db,
                    request.form.get("username"),
                    request.form.get("password"),
                    address=client_address(),
                    limits=limits,
                )
            except SignInThrottled as error:
                return (
                    _login_page(str(error), csrf_token(), _typed_name()),
                    429,
                    {"Retry-After": str(error.retry_after)},
                )
            except NotAllowed as error:
                message = str(error)
            else:
                session.clear()  # a new session id for the new identity
                session.permanent = True
                login_user(ConsoleUser(signed_in.token, signed_in.username, signed_in.role, frozenset()))
                csrf_token()
                prune_sessions(db, sessions)
                return redirect(_safe_next(request.args.get("next")))
        return _login_page(message, csrf_token(), _typed_name()), 401 if message else 200

    @server.post("/logout")
    def logout():
        if not _csrf_ok(request.form.get("csrf_token") or request.headers.get(CSRF_HEADER)):
            abort(400, "missing or wrong CSRF token")
        if current_user.is_authenticated:
            end_session(db, current_user.session_token, address=client_address())
        logout_user()
        session.clear()
        response = redirect("/login")
        response.delete_cookie(CSRF_COOKIE, samesite="Strict", secure=request.is_secure)
        return response


def _typed_name() -> str:
    """The user name a refused sign-in sent, to type the password again without it (escaped where shown)."""
    name = request.form.get("username") if request.method == "POST" else None
    return name[:64] if isinstance(name, str) else ""


def _login_page(message: str, token: str, username: str = "") -> str:
    alert = f'<div class="alert alert-danger" role="alert">{escape(message)}</div>' if message else ""
    focus_name, focus_password = ("", " autofocus") if username else (" autofocus", "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Switchyard</title>
<link rel="stylesheet" href="/assets/00-bootstrap.min.css"><link rel="stylesheet" href="/assets/switchyard.css">
</head><body class="bg-light">
<main class="container" style="max-width: 24rem; margin-top: 12vh">
<h1 class="h3 mb-3">Switchyard</h1>
{alert}
<form method="post" id="login-form" class="card card-body shadow-sm">
<input type="hidden" name="csrf_token" value="{escape(token)}">
<label class="form-label" for="username">User name</label>
<input class="form-control mb-3" id="username" name="username" autocomplete="username" required
 value="{escape(username)}"{focus_name}>
<label class="form-label" for="password">Password</label>
<input class="form-control mb-3" id="password" name="password" type="password"
 autocomplete="current-password" required{focus_password}>
<button class="btn btn-primary w-100" id="login-button" type="submit">Sign in</button>
</form></main></body></html>"""


def acting_user_or_none() -> ConsoleUser | None:
    return current_user._get_current_object() if current_user.is_authenticated else None
