"""Wiring: settings -> database, broker connection, registry, task service."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from core.broker import BrokerThread
from core.builtin_tasks import default_registry
from core.embedded import resolve_nats_url
from core.errors import BrokerUnavailable, SchemaOutdated
from core.permissions import ROLE_PERMISSIONS
from core.registry import TaskRegistry
from core.settings import Settings
from core.tasks import TaskService
from db import migrate
from db.engine import Database
from db.models import RolePermission

log = logging.getLogger(__name__)


def sync_role_permissions(db: Database) -> None:
    """Make role_permissions hold exactly the table of DESIGN section 2 (core.permissions)."""
    wanted = _wanted_permissions()
    with db.session(write=True) as session:
        have = set(session.execute(select(RolePermission.role, RolePermission.permission)))
        for role, permission in have - wanted:
            session.execute(
                delete(RolePermission).where(RolePermission.role == role, RolePermission.permission == permission)
            )
        session.add_all(RolePermission(role=r, permission=p) for r, p in sorted(wanted - have))


def _wanted_permissions() -> set[tuple[str, str]]:
    return {(role.value, perm.value) for role, perms in ROLE_PERMISSIONS.items() for perm in perms}


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
        have = set(session.execute(select(RolePermission.role, RolePermission.permission)))
    if have != _wanted_permissions():
        raise SchemaOutdated(f"the role permissions differ from this version's: run `{migrate.UPGRADE_COMMAND}`")


def prepare_database(db: Database) -> None:
    """A fresh database for tests and benchmarks: the models' schema, stamped current, and the
    permissions (production uses upgrade_database)."""
    migrate.create_at_head(db)
    sync_role_permissions(db)


class Runtime:
    """What one process needs to act on tasks synchronously."""

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
        this version cannot use is refused (check_database).

        With require_broker=False a missing or unreachable broker is tolerated: changes are
        committed and the relay publishes them later; `broker_error` says why.
        """
        db = Database(settings.resolved_database_url)
        if check:
            try:
                check_database(db)
            except Exception:
                db.dispose()
                raise
        broker, broker_error = _connect_broker(settings) if connect_broker else (None, None)
        if broker is None and require_broker:
            db.dispose()
            raise BrokerUnavailable(broker_error)
        runtime = cls(settings, db, registry or default_registry(), broker)
        runtime.broker_error = broker_error
        return runtime

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()
        self.db.dispose()


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
