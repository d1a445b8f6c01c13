"""Schema migrations (Alembic, driven from code: `python run.py db upgrade`).

The models (db/models.py) are the schema's source; every change to them comes with a
revision under db/migrations/versions, and tests/test_migrations.py checks that the migrated
schema and the models agree on SQLite and PostgreSQL. Processes that serve or work refuse a
database whose revision is not this code's head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.engine import Database
from db.errors import SchemaOutdated
from db.models import Base

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE_COMMAND = "python run.py db upgrade"


def _config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "db/migrations has no revision"
    return head


def current_revision(db: Database) -> str | None:
    with db.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database) -> tuple[str | None, str]:
    """Migrate to head; returns (revision before, revision after)."""
    before = current_revision(db)
    with db.connect(write=True) as connection:
        command.upgrade(_config(connection), "head")
    return before, head_revision()


def check_current(db: Database) -> None:
    """SchemaOutdated (one line, naming the command) unless the database is at this code's head."""
    current, head = current_revision(db), head_revision()
    if current == head:
        return
    found = "has no Switchyard schema" if current is None else f"is at schema revision {current}"
    raise SchemaOutdated(f"the database {found}; this version needs {head}: run `{UPGRADE_COMMAND}`")


def create_at_head(db: Database) -> None:
    """The models' schema, stamped as current: a fast path for tests and benchmarks that start
    from an empty database (migrations give the same schema; tests/test_migrations.py checks)."""
    Base.metadata.create_all(db.engine)
    with db.connect(write=True) as connection:
        command.stamp(_config(connection), "head")
