"""Routes for the systems around the console: health, readiness, metrics, and request logs.

/healthz and /readyz are unauthenticated and say nothing about tasks. /metrics is open unless
SWITCHYARD_METRICS_TOKEN is set (then it needs `Authorization: Bearer <token>`).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid

from flask import Flask, Response, g, jsonify, request

from core.observe import logs
from core.observe.health import is_ready, readiness
from core.observe.metrics import exposition, system_registry
from core.runtime import check_database
from core.settings import Settings

log = logging.getLogger("switchyard.web")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
QUIET_PATHS = ("/healthz", "/readyz", "/metrics", "/_dash-component-suites/", "/assets/")


def install_ops(server: Flask, settings: Settings, ctx) -> None:
    system = system_registry(lambda: ctx.snapshot.latest())

    @server.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @server.get("/readyz")
    def readyz():
        checks = readiness(ctx.db, ctx.runtime.broker, check_database)
        return jsonify(status="ok" if is_ready(checks) else "unavailable", **checks), 200 if is_ready(checks) else 503

    @server.get("/metrics")
    def metrics():
        if settings.metrics_token:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {settings.metrics_token}".encode()):
                return jsonify(error="metrics need the bearer token in SWITCHYARD_METRICS_TOKEN"), 401
        ctx.snapshot.get()  # starts the refresh thread on the first scrape
        body, content_type = exposition(system)
        return Response(body, content_type=content_type)

    @server.before_request
    def start_request_log():
        sent = request.headers.get("X-Request-ID", "")
        g.request_id = sent if REQUEST_ID.match(sent) else uuid.uuid4().hex
        g.request_started = time.perf_counter()
        g.log_token = logs.bind(request_id=g.request_id, address=request.remote_addr)

    @server.after_request
    def end_request_log(response: Response) -> Response:
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers["X-Request-ID"] = request_id
        if not request.path.startswith(QUIET_PATHS):
            started = getattr(g, "request_started", time.perf_counter())
            # A console polls every 2 s: requests are DEBUG; refusals and errors stand out at INFO.
            log.log(
                logging.DEBUG if response.status_code < 400 else logging.INFO,
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "user": _user_name(),
                },
            )
        return response

    @server.teardown_request
    def forget_request(_error=None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            logs.unbind(token)


def _user_name() -> str | None:
    from flask_login import current_user

    try:
        return current_user.username if current_user.is_authenticated else None
    except Exception:  # no user loader in this request (an API call, a static file)
        return None
