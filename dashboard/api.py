"""The HTTP API: JSON under /api/v1, for services and scripts (docs/api.md).

Every request is authenticated by `Authorization: Bearer <token>` (core.auth.tokens) and
nothing else: session cookies are never read here (dashboard/auth.py leaves /api/ to this
module), so a browser cannot be tricked into acting through the API (no CSRF exposure). Each
route makes one core call as the token's user (the same the console makes); core checks the
permission and audits.

Errors are one JSON line, {"error": "..."}: 400 unreadable body or query, 401 no or bad token,
403 not allowed, 404 no such task or endpoint, 405 wrong method, 409 wrong state / not an
upgrade / conflict, 413 body too large, 422 well-formed but refused input, 503 broker or
database unavailable, 500 anything else (logged, never a traceback).
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.auth.tokens import authenticate_token
from core.errors import (
    BrokerUnavailable,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotAllowed,
    NotAnUpgrade,
    NotFound,
    SwitchyardError,
    WrongState,
)
from core.observe import logs
from core.observe.stats import queue_depths
from core.runtime import Runtime
from core.sanitize import MAX_DEPTH, check_json
from core.tasks import reads
from dashboard.auth import client_address
from dashboard.limits import ReadGate, RefusalLimiter, TooMany
from dashboard.openapi import openapi_document
from dashboard.security import API_PREFIX

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
LIST_PARAMETERS = ("status", "bucket", "category", "phase", "q", "sort", "offset", "limit", "cursor")
BODY_MAX_DEPTH = MAX_DEPTH + 3  # {"tasks": [{"args": ...}]}: the arguments' own limit is MAX_DEPTH
UPGRADE_FIELDS = ("action", "reason")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

STATUS_CODES = (
    (InvalidInput, 422),
    (NotFound, 404),
    (NotAllowed, 403),
    (WrongState, 409),
    (NotAnUpgrade, 409),
    (Conflict, 409),
    (BrokerUnavailable, 503),
    (DatabaseUnavailable, 503),
)


class Unreadable(InvalidInput):
    """The request itself cannot be read (not JSON, not an object, a bad query value): 400."""


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    lines = str(message).strip().splitlines() or [""]
    response = jsonify(error=lines[0][:500])
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _body(fields: tuple[str, ...] | None = None) -> dict:
    """The request's JSON object (any content type; curl -d sends form-encoded by default)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    request.max_content_length = MAX_BODY_BYTES
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise Unreadable("send a JSON object as the request body")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise Unreadable(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise Unreadable(f"the body is nested deeper than {BODY_MAX_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise Unreadable("the body must be a JSON object")
    check_json(value, "the request body", max_depth=BODY_MAX_DEPTH)
    if fields is not None:
        unknown = sorted(str(key)[:40] for key in value if key not in fields)
        if unknown:
            raise InvalidInput(f"unknown field {unknown[0]!r}: use {', '.join(fields)}")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number: only finite numbers")


def _allowed_methods(path: str) -> list[str]:
    """The methods some real API route takes at this path (for a 405's Allow header)."""
    adapter = current_app.url_map.bind("api.invalid")
    allowed = []
    for method in METHODS:
        try:
            endpoint, _ = adapter.match(path, method=method)
        except HTTPException:  # not found, wrong method, a redirect
            continue
        if endpoint.startswith("api.") and endpoint != "api.unknown":
            allowed.append(method)
    return allowed


def install_api(server: Flask, runtime: Runtime, gate: ReadGate) -> None:
    db = runtime.db
    service = runtime.service
    refusals = RefusalLimiter()
    document = openapi_document(runtime.settings.categories)
    bp = Blueprint("api", __name__, url_prefix=API_PREFIX.rstrip("/"))

    def user() -> str:
        return g.api_actor.username

    def task(task_id: str):
        return jsonify(reads.describe_task(db, task_id))

    @bp.get("/v1/openapi.json")
    def openapi():
        return jsonify(document)

    @bp.before_request
    def authenticate():
        if request.endpoint == "api.openapi":
            return None  # the API's description: public, says nothing about tasks
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.strip().partition(" ")
        presented = credentials.strip() if scheme.lower() == "bearer" else header
        address = client_address()
        try:
            refusals.check(address)  # before anything is looked up, read or written
            g.api_actor = authenticate_token(db, presented, address=address)
        except TooMany as error:
            return error_response(429, str(error), {"Retry-After": str(error.retry_after)})
        except NotAllowed as error:
            refusals.refused(address)
            challenge = 'Bearer realm="switchyard"' + (', error="invalid_token"' if presented else "")
            return error_response(401, str(error), {"WWW-Authenticate": challenge})
        g.api_log_token = logs.bind(user=g.api_actor.username)
        return None

    # Blueprint teardowns run before the app's, so this unbinds before dashboard/ops.py does.
    @bp.teardown_request
    def forget_user(_error=None) -> None:
        token = g.pop("api_log_token", None)
        if token is not None:
            logs.unbind(token)

    @bp.get("/v1/me")
    def me():
        actor = g.api_actor
        return jsonify(
            username=actor.username, role=actor.role.value, permissions=sorted(p.value for p in actor.permissions)
        )

    @bp.post("/v1/tasks")
    def dispatch():
        dispatched = service.dispatch_tasks_as(
            reads.dispatch_requests(_body(), batch=False), user(), address=client_address()
        )
        task_id = dispatched.task_ids[0]
        response = task(task_id)
        response.status_code = 201
        response.headers["Location"] = f"/api/v1/tasks/{task_id}"
        return response

    @bp.post("/v1/tasks/batch")
    def dispatch_batch():
        body = _body(("tasks",))
        requests = reads.dispatch_requests(body.get("tasks"), batch=True)
        dispatched = service.dispatch_tasks_as(requests, user(), address=client_address())
        response = jsonify(ids=dispatched.task_ids, publish_pending=dispatched.publish_error is not None)
        response.status_code = 201
        return response

    @bp.get("/v1/tasks")
    def list_tasks():
        args = request.args
        unknown = sorted(k for k in args if k not in LIST_PARAMETERS)
        if unknown:
            raise Unreadable(f"unknown query parameter {unknown[0][:40]!r}: use {', '.join(LIST_PARAMETERS)}")
        try:
            query = reads.task_query(
                runtime.settings.categories,
                statuses=args.getlist("status"),
                buckets=args.getlist("bucket"),
                categories=args.getlist("category"),
                phases=args.getlist("phase"),
                text=args.get("q"),
                sort=args.get("sort"),
                offset=args.get("offset"),
                cursor=args.get("cursor"),
                limit=args.get("limit"),
            )
        except InvalidInput as error:
            raise Unreadable(str(error)) from None
        with gate.seat(user()):
            page = reads.list_tasks(db, user(), query, address=client_address())
        return jsonify(
            tasks=page.rows,
            total=page.total,
            count_cap=reads.COUNT_CAP,
            offset=page.offset,
            limit=page.limit,
            next_offset=page.next_offset,
            next_cursor=page.next_cursor,
        )

    @bp.get("/v1/tasks/<task_id>")
    def get_task(task_id: str):
        with gate.seat(user()):
            return jsonify(reads.get_task(db, user(), task_id, address=client_address()))

    @bp.post("/v1/tasks/<task_id>/upgrade")
    def upgrade(task_id: str):
        body = _body(UPGRADE_FIELDS)
        action = body.get("action") if isinstance(body.get("action"), str) else ""  # a number names no action
        service.upgrade_task(task_id, action, body.get("reason"), user(), address=client_address())
        return task(task_id)

    @bp.post("/v1/tasks/<task_id>/cancel")
    def cancel(task_id: str):
        service.cancel_task(task_id, user(), address=client_address())
        return task(task_id)

    @bp.post("/v1/tasks/<task_id>/retry")
    def retry(task_id: str):
        service.retry_task(task_id, user(), address=client_address())
        return task(task_id)

    @bp.get("/v1/depths")
    def depths():
        broker_error = runtime.broker_error
        with gate.seat(user()):
            depths = queue_depths(db, runtime.broker, user(), broker_error=broker_error, address=client_address())
        return jsonify(depths)

    # Everything else under /api/ lands here (after authentication), rather than on the
    # console's catch-all page route.
    @bp.route("/", methods=METHODS, defaults={"rest": ""}, endpoint="unknown")
    @bp.route("/<path:rest>", methods=METHODS, endpoint="unknown")
    def unknown(rest: str):
        allowed = _allowed_methods(request.path)
        if allowed:
            return error_response(
                405, f"{request.method} is not allowed here: use {', '.join(allowed)}", {"Allow": ", ".join(allowed)}
            )
        return error_response(404, f"no API endpoint {request.path[:100]} (see docs/api.md)")

    @bp.errorhandler(SwitchyardError)
    def switchyard_error(error: SwitchyardError):
        if isinstance(error, Unreadable):
            return error_response(400, str(error))
        if isinstance(error, TooMany):
            return error_response(429, str(error), {"Retry-After": str(error.retry_after)})
        status = next((code for kind, code in STATUS_CODES if isinstance(error, kind)), 500)
        return error_response(status, str(error))

    @bp.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 413:
            return error_response(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        return error_response(error.code or 500, error.description or error.name)

    @bp.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("API %s %s failed", request.method, request.path)
        return error_response(500, "internal error: the server log has the details")

    server.register_blueprint(bp)
