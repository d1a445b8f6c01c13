"""What `run.py serve` starts: the embedded broker (when none is configured), the first admin,
in-process workers, demo traffic, and the console on waitress. Everything it starts stops with
it, in the reverse order."""

from __future__ import annotations

import signal
from contextlib import ExitStack

from waitress import create_server

from core.auth.users import ensure_admin
from core.broker.embedded import start_embedded_broker, stop_embedded_broker
from core.engine.worker import Worker, WorkerScope, WorkerThread
from core.priority import Bucket
from core.runtime import Runtime
from core.settings import Settings
from core.tasks.demo import DemoTraffic
from dashboard import api
from dashboard.app import create_app
from dashboard.security import check_secret_key

IN_PROCESS_CONCURRENCY = 4


def first_admin_notice(password: str) -> str:
    """The one-time admin password, framed so it stands out from the logs around it."""
    lines = [
        "First start: sign in as  admin  with the password",
        f"    {password}",
        "It is shown this once. Change it on the My account page.",
    ]
    width = max(len(line) for line in lines) + 2
    rule = "+" + "-" * width + "+"
    return "\n".join(["", rule, *(f"| {line.ljust(width - 2)} |" for line in lines), rule, ""])


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    worker_count: int,
    demo: bool,
    admin_password: str | None = None,
) -> None:
    """Run the console until SIGTERM or Ctrl-C."""
    check_secret_key(settings)  # before anything starts: production needs a strong secret key
    with ExitStack() as stack:
        embedded = start_embedded_broker(settings)
        stack.callback(stop_embedded_broker, settings, embedded)
        runtime = stack.enter_context(Runtime.open(settings, require_broker=True))
        generated = ensure_admin(runtime.db, admin_password)
        assert runtime.broker is not None  # require_broker
        url = runtime.broker.broker.url
        for index in range(worker_count):
            # The first worker is a high-only pool: urgent work never waits behind a long task.
            scope = WorkerScope(buckets=(Bucket.HIGH,)) if index == 0 and worker_count > 1 else WorkerScope()
            worker = Worker(
                settings, runtime.db, runtime.registry, url, scope=scope, concurrency=IN_PROCESS_CONCURRENCY
            )
            stack.callback(WorkerThread(worker, restart=True).start().stop)
        if demo:
            stack.callback(DemoTraffic(runtime.service).start().stop)
        app = create_app(settings, runtime)
        # waitress reads a whole body before the app sees it: never more than the API takes (the
        # console takes less, and refuses a request without a session before reading it).
        server = create_server(
            app.server, host=host, port=port, threads=settings.web_threads, max_request_body_size=api.MAX_BODY_BYTES
        )
        signal.signal(signal.SIGTERM, lambda *_: server.close())  # before the URL: a supervisor may stop us at once
        print(f"Switchyard console: http://{host}:{server.effective_port}/", flush=True)
        print(f"broker: {url}  database: {runtime.db.describe()}", flush=True)
        if generated:
            print(first_admin_notice(generated), flush=True)
        try:
            server.run()
        except (KeyboardInterrupt, OSError):
            pass
