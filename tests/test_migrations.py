"""Migrations: the schema built by Alembic is the models' schema, on SQLite and PostgreSQL, and
a database at another revision is refused with the command that fixes it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from core.errors import SchemaOutdated
from core.runtime import Runtime, check_database, prepare_database, upgrade_database
from db import migrate
from db.engine import Database
from db.models import Base
from tests.support.constants import ROOT
from tests.support.harness import settings_env


@pytest.fixture
def empty(database_url):
    db = Database(database_url)
    db.drop_schema()
    yield db
    db.drop_schema()
    prepare_database(db)  # leave the shared database as the other tests expect it
    db.dispose()


def schema(db: Database) -> dict:
    """Everything that makes the schema: columns, keys, indexes (with partial conditions), triggers."""
    found = {}
    inspector = inspect(db.engine)
    for table in sorted(inspector.get_table_names()):
        columns = {
            c["name"]: (str(c["type"]).split("(")[0].upper(), c["nullable"]) for c in inspector.get_columns(table)
        }
        indexes = {}
        for index in inspector.get_indexes(table):
            where = index.get("dialect_options", {}).get(f"{db.engine.dialect.name}_where")
            names = tuple(str(c) for c in index.get("column_names") or ()) + tuple(index.get("expressions") or ())
            indexes[index["name"]] = (names, bool(index["unique"]), str(where) if where is not None else None)
        uniques = {u["name"]: tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
        keys = tuple(inspector.get_pk_constraint(table)["constrained_columns"])
        foreign = sorted(
            (tuple(f["constrained_columns"]), f["referred_table"]) for f in inspector.get_foreign_keys(table)
        )
        found[table] = {"columns": columns, "indexes": indexes, "unique": uniques, "pk": keys, "fk": foreign}
    with db.engine.connect() as connection:
        if db.is_sqlite:
            triggers = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()
        else:
            triggers = connection.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars()
        found["triggers"] = sorted(triggers)
    return found


def test_mig001_migrations_build_exactly_the_models_schema(empty):
    before, after = upgrade_database(empty)
    assert before is None and after == migrate.head_revision() == migrate.current_revision(empty)
    check_database(empty)
    with empty.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # Indexes the models make on another dialect only (ddl_if) are not missing here.
    elsewhere = {
        index.name
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if index._ddl_if is not None and index._ddl_if.dialect != empty.url.get_backend_name()
    }
    assert [d for d in differences if not (d[0] == "add_index" and d[1].name in elsewhere)] == []
    migrated = schema(empty)
    assert migrated["triggers"] == ["tr_tasks_started_history"]
    empty.drop_schema()
    prepare_database(empty)  # the models' own DDL (create_all), as tests and benchmarks build it
    assert schema(empty) == migrated


def test_mig002_upgrade_is_safe_to_repeat(empty):
    upgrade_database(empty)
    assert upgrade_database(empty) == (migrate.head_revision(), migrate.head_revision())


def test_mig003_an_empty_or_outdated_database_is_refused_with_the_command_to_run(settings, empty):
    with pytest.raises(SchemaOutdated, match=r"has no Switchyard schema; .* run `python run.py db upgrade`"):
        check_database(empty)
    with pytest.raises(SchemaOutdated):
        Runtime.open(settings, connect_broker=False)
    upgrade_database(empty)
    with empty.connect(write=True) as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    with pytest.raises(SchemaOutdated, match="is at schema revision 0000_older"):
        check_database(empty)
    env = settings_env(settings)
    for command in (["worker"], ["serve", "--port", "0"], ["dispatch", "demo.echo"]):
        result = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *command],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 7, (command, result.stderr)
        assert result.stderr.strip() == (
            "error: the database is at schema revision 0000_older; "
            f"this version needs {migrate.head_revision()}: run `python run.py db upgrade`"
        )
    current = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "db", "current"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert current.returncode == 0 and current.stdout.startswith("0000_older (not current")


def test_mig004_stale_permissions_are_refused_until_upgrade(empty):
    upgrade_database(empty)
    with empty.connect(write=True) as connection:
        connection.execute(text("DELETE FROM role_permissions WHERE role = 'operator'"))
    with pytest.raises(SchemaOutdated, match="role permissions differ"):
        check_database(empty)
    upgrade_database(empty)
    check_database(empty)
