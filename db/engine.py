"""Engine and sessions for SQLite (embedded default, WAL) and PostgreSQL."""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db import dialect
from db.errors import DatabaseUnavailable, InvalidInput, ReadTimedOut
from db.models import Base

SQLITE_BUSY_TIMEOUT_SECONDS = 15.0
# Pages (4 KiB) of write-ahead log past which a commit checkpoints by itself (SQLite: 1,000).
WAL_AUTOCHECKPOINT_PAGES = 10_000

# What core holds while it works in a transaction and hands to db.queries, without importing
# SQLAlchemy itself: a session (`Database.session`) or a Core connection (`Database.connect`).
Transaction = Session
log = logging.getLogger(__name__)
__all__ = ["Database", "Transaction", "Connection", "SQLITE_BUSY_TIMEOUT_SECONDS", "rows_changed"]


def rows_changed(result: object) -> int:
    """How many rows an UPDATE or DELETE changed (a compare-and-set won if it is 1)."""
    return int(getattr(result, "rowcount"))


class Database:
    """One engine per process. `session()` reads; `session(write=True)` takes the write lock first.

    On SQLite a transaction that reads before it writes can fail with SQLITE_BUSY when another
    process commits in between; write sessions therefore start with BEGIN IMMEDIATE.
    On PostgreSQL both are ordinary READ COMMITTED transactions and the CAS does the work.
    """

    def __init__(self, url: str, *, echo: bool = False, read_timeout_seconds: float | None = None):
        self.url = make_url(url)
        self.read_timeout_seconds = read_timeout_seconds
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        busy_seconds = 0.0
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            # How long a writer waits for another's lock before "database is locked":
            # `?timeout=SECONDS` in the URL, as sqlite3.connect takes it.
            timeout = self.url.query.get("timeout", str(SQLITE_BUSY_TIMEOUT_SECONDS))
            busy_seconds = float(timeout if isinstance(timeout, str) else timeout[0])
            self.engine = create_engine(
                self.url, echo=echo, pool_size=20, max_overflow=20, connect_args={"timeout": busy_seconds}
            )
            self._checkpointer = (
                _Checkpointer(self.url.database) if self.url.database not in (None, ":memory:") else None
            )
            _configure_sqlite(self.engine, busy_seconds, self._checkpointer)
        else:
            # psycopg prepares a statement after a few runs, and PostgreSQL may then switch it to a
            # generic plan that cannot see the values (one Tasks-page count went from 25 ms to
            # 150-190 ms): keep the prepared statements, plan each execution for its values.
            # Every transaction here is short: one left idle for a minute belongs to a client that
            # is gone (a crashed host, a cut network) and would hold its row locks until the
            # server noticed; end it. Keepalives let a client notice a server that went silent.
            self.engine = create_engine(
                self.url,
                echo=echo,
                pool_size=10,
                max_overflow=20,
                connect_args={
                    "options": "-c plan_cache_mode=force_custom_plan -c idle_in_transaction_session_timeout=60000",
                    "keepalives": 1,
                    "keepalives_idle": 30,
                    "keepalives_interval": 10,
                    "keepalives_count": 3,
                },
            )
        # SQLite lets one writer in at a time and makes the others poll with sleeps (the busy
        # timeout). Writers of one process queue on a lock instead, and hand over at once.
        self._write_turn = threading.RLock() if self.is_sqlite else None
        self._busy_seconds = busy_seconds
        self._write_engine = self.engine.execution_options(switchyard_write=True)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error.

        Database outages surface as DatabaseUnavailable, values the database cannot store (a NUL
        byte in PostgreSQL text) as InvalidInput, each with a one-line message.
        """
        factory = self._writer if write else self._reader
        try:
            with self._turn(write), factory() as session, session.begin():
                yield session
        except OperationalError as error:
            raise DatabaseUnavailable(_describe(error)) from error
        except DataError as error:
            raise InvalidInput(_refused_value(error)) from error

    @contextmanager
    def _turn(self, write: bool) -> Iterator[None]:
        """A write's turn among this process's writers (SQLite), given up after the busy timeout
        with the message SQLite itself would give."""
        turn = self._write_turn if write else None
        if turn is None:
            yield
            return
        if not turn.acquire(timeout=self._busy_seconds):
            raise DatabaseUnavailable("database unavailable: database is locked")
        try:
            yield
        finally:
            turn.release()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read transaction for something a person or a service asked for: stopped after
        `read_timeout_seconds` (ReadTimedOut, a one-line 503) so one expensive read cannot hold
        a web thread and the database for long."""
        limit = self.read_timeout_seconds
        if limit is None:
            with self.session() as session:
                yield session
            return
        try:
            with self._reader() as session, session.begin():
                connection = session.connection()
                with dialect.time_limit(connection, limit):
                    yield session
        except OperationalError as error:
            if dialect.is_time_limit(error):
                raise ReadTimedOut(f"this read took longer than {limit:g} s and was stopped: narrow it down") from None
            raise DatabaseUnavailable(_describe(error)) from error
        except DataError as error:
            raise InvalidInput(_refused_value(error)) from error

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[Connection]:
        """A Core connection in a transaction, for hot paths with prebuilt statements (the
        worker's claim and finish): no ORM session to build per call."""
        try:
            with self._turn(write), (self._write_engine if write else self.engine).begin() as connection:
                yield connection
        except OperationalError as error:
            raise DatabaseUnavailable(_describe(error)) from error
        except DataError as error:
            raise InvalidInput(_refused_value(error)) from error

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Run the block holding a lock named `key` across processes (PostgreSQL). SQLite has no
        named locks: callers lock in their process too, and an SQLite deployment serves the
        console from one process."""
        if self.is_sqlite:
            yield
            return
        with self.connect() as connection:
            dialect.lock_named(connection, key)
            try:
                yield
            finally:
                dialect.unlock_named(connection, key)

    def ping(self) -> None:
        """One `SELECT 1`: DatabaseUnavailable unless the database answers."""
        with self.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def refresh_statistics(self) -> None:
        """Let the query planner see the data (db.dialect.refresh_statistics)."""
        if self.is_sqlite:
            with self.connect(write=True) as connection:
                dialect.refresh_statistics(connection)

    def drop_schema(self) -> None:
        """Everything Switchyard made here (tests and benchmarks start from nothing)."""
        Base.metadata.drop_all(self.engine)
        with self.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
            dialect.drop_extras(connection)

    def dispose(self) -> None:
        if self.is_sqlite and self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)


class _Checkpointer:
    """Copies SQLite's write-ahead log back into the database file on a thread of its own, so
    commits do not. With SQLite's default (a checkpoint, with its fsync, inside whichever commit
    filled 1,000 pages), every ~80th insert into `tasks` paid for one: about half of what a
    single-task dispatch cost. Commits still checkpoint past WAL_AUTOCHECKPOINT_PAGES, should
    this thread fall behind or be gone."""

    INTERVAL_SECONDS = 0.5

    def __init__(self, path: str):
        self._path = path
        self._dirty = threading.Event()
        self._stopped = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()

    def wrote(self) -> None:
        self._dirty.set()
        if not self._started:
            with self._start_lock:
                if not self._started and not self._stopped.is_set():
                    threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True).start()
                    self._started = True

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        connection = None
        try:
            while not self._stopped.wait(self.INTERVAL_SECONDS):
                if not self._dirty.is_set():
                    continue
                self._dirty.clear()
                try:
                    connection = connection or sqlite3.connect(self._path, timeout=1, isolation_level=None)
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as error:  # busy, or the file went away: the commits cover it
                    log.debug("checkpoint skipped: %s", error)
        finally:
            if connection is not None:
                connection.close()


def _configure_sqlite(engine: Engine, busy_seconds: float, checkpointer: _Checkpointer | None) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if checkpointer is not None:

        @event.listens_for(engine, "commit")
        def on_commit(connection):
            if connection.get_execution_options().get("switchyard_write"):
                checkpointer.wrote()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        if connection.get_execution_options().get("switchyard_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def _describe(error: SQLAlchemyError) -> str:
    original = getattr(error, "orig", None) or error
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    return f"database unavailable: {first_line}"


def _refused_value(error: DataError) -> str:
    original = str(getattr(error, "orig", None) or error).strip()
    return f"the database refused a value: {original.splitlines()[0] if original else 'invalid data'}"
