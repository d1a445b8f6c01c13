"""Every difference between SQLite and PostgreSQL that a query has to know about, in one place.

How to connect to each (pragmas, pool sizes, connection options) is db.engine's business; this
module is for the statements: time buckets, values that come back as text, locks, durability,
statistics.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

from sqlalchemy import ARRAY, bindparam, func, literal_column, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias

# SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS.ffffff' text: a minute, an hour or a day is
# the first 16, 13 or 10 characters of it.
_TEXT_LENGTH = {"minute": 16, "hour": 13, "day": 10}
_TEXT_REST = {"minute": ":00", "hour": ":00:00", "day": " 00:00:00"}


def is_sqlite(bind: Session | Connection) -> bool:
    return bind.get_bind().dialect.name == "sqlite" if isinstance(bind, Session) else bind.dialect.name == "sqlite"


def time_bucket(sqlite: bool, column: Any, unit: str) -> ColumnElement:
    """The start of the minute, hour or day a time column falls in, for a GROUP BY.

    On SQLite the length is written as a constant, so the expression is character for character
    the one of an expression index (ix_priority_history_hour / _day) and a GROUP BY can walk it."""
    if sqlite:
        return func.substr(column, literal_column("1"), literal_column(str(_TEXT_LENGTH[unit])))
    return func.date_trunc(unit, column)


def bucket_start(value: datetime | str, unit: str) -> datetime:
    """A time_bucket() value as an aware UTC datetime (SQLite hands back the text prefix)."""
    if isinstance(value, str):
        value = value + _TEXT_REST[unit]
    return as_utc(value)


def as_utc(value: datetime | str) -> datetime:
    """An aggregate of a UTC column (MIN, MAX, strftime) as an aware datetime: SQLite hands it
    back naive, or as text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def serialize_by_keys(session: Session, *keys: str) -> None:
    """Make transactions that name the same key run one after the other. SQLite's write
    transactions (BEGIN IMMEDIATE) already do; PostgreSQL takes one advisory lock per key, held
    to the end of the transaction."""
    if is_sqlite(session):
        return
    for key in keys:
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))


@contextmanager
def time_limit(connection: Connection, seconds: float) -> Iterator[None]:
    """Stop every statement of this transaction that runs past `seconds` in all (PostgreSQL:
    statement_timeout for the transaction; SQLite: a progress handler that interrupts)."""
    if not is_sqlite(connection):
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")
        yield
        return
    raw: Any = connection.connection.dbapi_connection
    deadline = time.monotonic() + seconds
    raw.set_progress_handler(lambda: time.monotonic() > deadline, 20_000)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)


def is_time_limit(error: BaseException) -> bool:
    """The error time_limit() stops a statement with."""
    original = getattr(error, "orig", None)
    if getattr(original, "sqlstate", None) == "57014":  # PostgreSQL: query_canceled
        return True
    return "interrupted" in str(original)  # SQLite


def lock_named(connection: Connection, key: str) -> bool:
    """Take a lock named `key` for as long as the connection holds it (PostgreSQL's session
    advisory lock). False on SQLite, which has no named locks."""
    if is_sqlite(connection):
        return False
    connection.execute(select(func.pg_advisory_lock(func.hashtext(key))))
    return True


def unlock_named(connection: Connection, key: str) -> None:
    connection.execute(select(func.pg_advisory_unlock(func.hashtext(key))))


def updates_from_arrays(connection: Connection) -> bool:
    """Whether `UPDATE ... FROM unnest(array, ...)` works, for one statement over many rows:
    PostgreSQL only (in-process SQLite gains little from one statement for many)."""
    return not is_sqlite(connection)


def array_rows(name: str, **columns: Any) -> TableValuedAlias:
    """A FROM clause of rows zipped from one array parameter per column, `unnest(...) AS
    name(columns)`, for a statement used where updates_from_arrays(); the parameter of column
    c is named `{name}_{c}`, and array_params() fills them."""
    arrays = (bindparam(f"{name}_{column}", type_=ARRAY(type_)) for column, type_ in columns.items())
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


def array_params(rows: TableValuedAlias, values: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """The parameters of array_rows() `rows` for these rows (tuples in its column order)."""
    return {f"{rows.name}_{column}": list(items) for column, items in zip(rows.c.keys(), zip(*values))}


def relax_durability(connection: Connection) -> None:
    """Commit this transaction without waiting for the disk (PostgreSQL; SQLite's WAL with
    synchronous=NORMAL already does). For bookkeeping the engine can recover after a crash."""
    if not is_sqlite(connection):
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO off")


def refresh_statistics(connection: Connection) -> None:
    """Let the planner see the data: SQLite never gathers statistics by itself (it needs them to
    choose the partial indexes); PostgreSQL's autovacuum does."""
    if is_sqlite(connection):
        connection.exec_driver_sql("PRAGMA analysis_limit=1000")  # a sample: quick at any size
        connection.exec_driver_sql("PRAGMA optimize=0x10002")


def drop_extras(connection: Connection) -> None:
    """What drop_all does not drop: PostgreSQL's trigger function."""
    if not is_sqlite(connection):
        connection.exec_driver_sql("DROP FUNCTION IF EXISTS switchyard_history_started()")
