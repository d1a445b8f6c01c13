"""What every response and every state-changing request of the console goes through.

- Headers on every response (pages, Dash endpoints, assets, /healthz, /api/...): a
  Content-Security-Policy whose scripts are this origin's files plus the hashes of Dash's own
  inline scripts (`app.csp_hashes()`), nosniff, no framing, a same-origin referrer, no caching of
  anything but static files, HSTS over HTTPS.
- POST/PUT/PATCH/DELETE outside /api/ (the API authenticates with bearer tokens, never cookies)
  must come from this origin: an Origin (or, without one, a Referer) naming another site is
  refused. The CSRF token (dashboard/auth.py) is checked as well.
- Cookies: HttpOnly and SameSite (set in create_app and auth.py); Secure whenever the request
  came over HTTPS, which behind proxies is known only from the SWITCHYARD_TRUSTED_PROXIES
  nearest hops (werkzeug's ProxyFix); with none trusted, X-Forwarded-* are ignored.
- Errors on the Dash endpoints are one line of JSON, never a traceback; anything unexpected
  anywhere is logged with its traceback and answered "internal error".
- A refused action (a sign-in, a sign-out, a click on a console action) is one `denied` row in
  the audit log, whoever sent it, signed in or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import dash
from dash.exceptions import DependencyException
from flask import Flask, Response, current_app, g, jsonify, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from core.auth.audit import DENIED, record, record_repeated
from core.auth.permissions import Permission
from core.auth.sessions import describe_dead_session
from core.auth.signin import SIGN_IN
from core.errors import InvalidInput
from core.settings import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
DASH_PREFIX = "/_dash"
UPDATE_COMPONENT = "/_dash-update-component"
COMPONENT_SUITES = "/_dash-component-suites/"
STATIC_PREFIXES = ("/assets/", COMPONENT_SUITES)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY_BYTES = 2 * 1024 * 1024  # console forms and callbacks; the API sets its own limits

MIN_SECRET_LENGTH = 32
PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "example", "default", "secret", "password", "switchyard")

_POLICIES = "switchyard.callback_policies"
_SCRIPT_HASHES = "switchyard.script_hashes"
_DB = "switchyard.db"


@dataclass(frozen=True)
class CallbackPolicy:
    """Who may call one Dash callback. `action`: fired by a person's click, so a refused request
    to it is audited even when it comes without a valid session."""

    name: str
    permission: Permission | None
    action: bool


def callback_policies(server: Flask) -> dict[str, CallbackPolicy]:
    """Policies by the callback's output key (the `output` field of a callback request)."""
    return server.extensions.setdefault(_POLICIES, {})


def set_script_hashes(server: Flask, hashes: list[str]) -> None:
    server.extensions[_SCRIPT_HASHES] = list(hashes)


def content_security_policy(server: Flask) -> str:
    scripts = " ".join(["'self'", *server.extensions.get(_SCRIPT_HASHES, [])])
    return (
        "default-src 'self'; "
        f"script-src {scripts}; "
        # Plotly, AG Grid and React set inline styles; styles cannot run code.
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "object-src 'none'; "
        "base-uri 'none'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class ConsoleDash(dash.Dash):
    """Dash with its development tools off whatever DASH_DEBUG, DASH_UI, DASH_HOT_RELOAD or
    DASH_PRUNE_ERRORS say: no dev-tools UI, no hot reload, no tracebacks in responses. `app.run`
    (dash[testing]) calls enable_dev_tools; `run.py serve` uses waitress and never does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.enable_dev_tools()

    def enable_dev_tools(self, *args, **kwargs) -> bool:
        return super().enable_dev_tools(
            debug=False,
            dev_tools_ui=False,
            dev_tools_props_check=False,
            dev_tools_serve_dev_bundles=False,
            dev_tools_hot_reload=False,
            dev_tools_silence_routes_logging=True,
            dev_tools_disable_version_check=True,
            dev_tools_prune_errors=False,
            dev_tools_validate_callbacks=False,
        )


def secret_key_problem(settings: Settings) -> str | None:
    """Why the configured secret key may not sign production sessions, or None. Development
    runs with a key generated into the data folder when none is set."""
    if settings.env != "production":
        return None
    key = settings.secret_key or ""
    if not key:
        return "SWITCHYARD_ENV=production needs SWITCHYARD_SECRET_KEY: a random string of 32 or more characters"
    if len(key) < MIN_SECRET_LENGTH:
        return f"SWITCHYARD_SECRET_KEY is {len(key)} characters; production needs {MIN_SECRET_LENGTH} or more"
    if len(set(key)) < 10 or any(word in key.lower() for word in PLACEHOLDER_WORDS):
        return (
            "SWITCHYARD_SECRET_KEY looks like a placeholder: use a random string, "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return None


def check_secret_key(settings: Settings) -> None:
    problem = secret_key_problem(settings)
    if problem:
        raise InvalidInput(problem)


class _SessionCookies(SecureCookieSessionInterface):
    """The session cookie is Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or {"http": 80, "https": 443}.get(scheme)


def cross_origin() -> bool:
    """True when the browser says this request comes from another site."""
    sent = request.headers.get("Origin")
    if sent is None:
        sent = request.headers.get("Referer")
    if sent is None:
        return False  # not a browser, or one that says nothing: the CSRF token decides
    own = _origin(request.host_url)
    return own is None or _origin(sent) != own


def requested_callback() -> CallbackPolicy | None:
    """The policy of the callback a /_dash-update-component request names, if it is one."""
    if request.path != UPDATE_COMPONENT:
        return None
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        return None
    output = body.get("output") if isinstance(body, dict) else None
    return callback_policies(current_app).get(output) if isinstance(output, str) else None


def _acting_name() -> tuple[str | None, str | None]:
    """Who sent this request (a user name, or None) and, for a session that no longer works, why."""
    if current_user.is_authenticated:
        return current_user.username, None
    token = session.get("_user_id")
    if token is None:
        return None, None
    return describe_dead_session(current_app.extensions[_DB], token)


def audit_refusal(message: str) -> None:
    """One `denied` audit row for a refused sign-in, sign-out or console action; other refused
    requests (a timer refresh from a tab left open after sign-out) are only answered."""
    if request.method != "POST":
        return
    path = request.path
    if path == "/login":
        sent = request.form.get("username")
        actor = target = sent[:64] if isinstance(sent, str) and sent else None
        action, why = SIGN_IN, None
    elif path == "/logout":
        actor, why = _acting_name()
        action, target = "sign_out", actor
    else:
        policy = requested_callback()
        if policy is None or not policy.action:
            return
        actor, why = _acting_name()
        action, target = "callback", policy.name
    detail = f"{message} ({why})" if why else message
    db = current_app.extensions[_DB]
    if current_user.is_authenticated or action == SIGN_IN:  # sign-ins are throttled on their own rows
        record(
            db, actor=actor, action=action, target=target, outcome=DENIED, detail=detail, address=request.remote_addr
        )
    else:  # without a session: these come in floods, one row per address and minute counts them
        record_repeated(db, actor=actor, action=action, target=target, detail=detail, address=request.remote_addr)


def refuse(status: int, message: str) -> tuple[Response, int]:
    """Answer a refused request with one line of JSON (audited when it was an action)."""
    audit_refusal(message)
    return jsonify(error=message), status


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def install_security(server: Flask, settings: Settings, db) -> None:
    server.extensions[_DB] = db
    server.debug = False
    server.config.update(
        DEBUG=False,
        PROPAGATE_EXCEPTIONS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
    )
    server.session_interface = _SessionCookies()
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        server.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            server.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    @server.before_request
    def same_origin_only():
        if request.path.startswith(API_PREFIX):
            return None
        request.max_content_length = MAX_BODY_BYTES
        if request.method in SAFE_METHODS or not cross_origin():
            return None
        return refuse(403, "cross-origin request refused")

    @server.after_request
    def security_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = content_security_policy(server)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        if request.is_secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if not request.path.startswith(STATIC_PREFIXES) and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    @server.errorhandler(Exception)
    def one_line_errors(error: Exception):
        if isinstance(error, HTTPException):
            if request.path.startswith(DASH_PREFIX) and error.code and error.code >= 400:
                return jsonify(error=_one_line(error.description or error.name)), error.code
            return error
        if request.path.startswith(COMPONENT_SUITES) and isinstance(error, (DependencyException, OSError)):
            return jsonify(error="no such file"), 404  # an unknown library or file name
        request_id = getattr(g, "request_id", None)
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=error)
        message = f"internal error (request {request_id})" if request_id else "internal error"
        if request.path.startswith(DASH_PREFIX):
            return jsonify(error=message), 500
        return Response(message + "\n", status=500, mimetype="text/plain")
