"""Wiring: settings -> database, broker connection, task registry, task service. And the
database checks every process makes before it starts work."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import TracebackType

from core.auth.permissions import wanted_role_permissions
from core.broker.embedded import resolve_nats_url
from core.broker.jetstream import BrokerThread
from core.engine.worker import Worker, WorkerScope
from core.errors import BrokerUnavailable, InvalidInput, SchemaOutdated
from core.observe.metrics import serve_metrics
from core.settings import Settings
from core.tasks.builtin import registry_for
from core.tasks.registry import TaskRegistry
from core.tasks.service import TaskService
from db import migrate
from db.engine import Database
from db.queries import users as user_queries

log = logging.getLogger(__name__)


def sync_role_permissions(db: Database) -> None:
    """Make role_permissions hold exactly core.auth.permissions.ROLE_PERMISSIONS."""
    with db.session(write=True) as session:
        user_queries.replace_role_permissions(session, wanted_role_permissions())


def upgrade_database(db: Database) -> tuple[str | None, str]:
    """`run.py db upgrade`: migrate to this version's schema and permissions."""
    revisions = migrate.upgrade(db)
    sync_role_permissions(db)
    return revisions


def check_database(db: Database) -> None:
    """Refuse (SchemaOutdated, naming the command to run) a database this version cannot use:
    a schema revision other than this code's head, or role permissions that differ from it."""
    migrate.check_current(db)
    with db.session() as session:
        have = user_queries.role_permission_pairs(session)
    if have != wanted_role_permissions():
        raise SchemaOutdated(f"the role permissions differ from this version's: run `{migrate.UPGRADE_COMMAND}`")


def describe_schema(db: Database) -> str:
    """`run.py db current`: the revision, and whether it is this version's."""
    current = migrate.current_revision(db)
    try:
        check_database(db)
        state = "current"
    except SchemaOutdated:
        state = f"not current: run `{migrate.UPGRADE_COMMAND}`"
    return f"{current or 'empty'} ({state}; this version needs {migrate.head_revision()})"


def open_database(settings: Settings, *, check: bool = True) -> Database:
    """The database alone (use it as a context manager); with check, refused unless this
    version can use it (check_database)."""
    db = Database(settings.resolved_database_url, read_timeout_seconds=settings.read_timeout_seconds)
    if check:
        try:
            check_database(db)
        except Exception:
            db.dispose()
            raise
    return db


def prepare_database(db: Database) -> None:
    """A fresh database for tests and benchmarks: the models' schema, stamped current, and the
    permissions (production uses upgrade_database)."""
    migrate.create_at_head(db)
    sync_role_permissions(db)


class Runtime:
    """What one process needs to act on tasks synchronously. Use it as a context manager, or
    close() it."""

    def __init__(self, settings: Settings, db: Database, registry: TaskRegistry, broker: BrokerThread | None):
        self.settings = settings
        self.db = db
        self.registry = registry
        self.broker = broker
        self.service = TaskService(settings, db, registry, broker)
        self.broker_error: str | None = None

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        registry: TaskRegistry | None = None,
        require_broker: bool = False,
        connect_broker: bool = True,
        check: bool = True,
    ) -> "Runtime":
        """Connect to the database (and the broker if one is known). With check, a database
        this version cannot use is refused (check_database). The registry defaults to the
        built-in tasks plus SWITCHYARD_TASK_MODULES.

        With require_broker=False a missing or unreachable broker is tolerated: changes are
        committed and the relay publishes them later; `broker_error` says why.
        """
        db = open_database(settings, check=check)
        broker, broker_error = _connect_broker(settings) if connect_broker else (None, None)
        if broker is None and require_broker:
            db.dispose()
            raise BrokerUnavailable(broker_error or "broker unavailable")
        runtime = cls(settings, db, registry or registry_for(settings), broker)
        runtime.broker_error = broker_error
        return runtime

    def close(self) -> None:
        self.service.close()
        if self.broker is not None:
            self.broker.close()
        self.db.dispose()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _connect_broker(settings: Settings) -> tuple[BrokerThread | None, str | None]:
    url = resolve_nats_url(settings)
    if url is None:
        return None, "no broker: set SWITCHYARD_NATS_URL or start `python run.py serve`"
    candidate = BrokerThread(settings, url)
    try:
        return candidate.connect(), None
    except BrokerUnavailable as error:
        candidate.close()
        return None, str(error)


def run_worker_process(
    settings: Settings, scope: WorkerScope, *, concurrency: int, maintenance: bool, metrics_port: int
) -> None:
    """Run one worker in this process until SIGINT or SIGTERM."""
    url = resolve_nats_url(settings)
    if url is None:
        raise BrokerUnavailable("no broker: set SWITCHYARD_NATS_URL or start `python run.py serve` first")
    if not 0 <= metrics_port <= 65535:
        raise InvalidInput("--metrics-port must be a port number (0: off)")
    # A broker found through the data folder (an embedded one) may come back on another port.
    url_source = None if settings.nats_url else (lambda: resolve_nats_url(settings))
    registry = registry_for(settings)
    with open_database(settings) as db:
        if metrics_port:
            serve_metrics(metrics_port, settings.host)
        while True:
            worker = Worker(
                settings, db, registry, url, scope=scope, concurrency=concurrency, maintenance=maintenance,
                url_source=url_source,
            )  # fmt: skip
            asyncio.run(_run_until_signalled(worker))
            if worker.moved_to is None:
                return
            url = worker.moved_to


async def _run_until_signalled(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()
