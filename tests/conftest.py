"""Shared fixtures: a real nats-server from the wheel, real SQLite and (when
SWITCHYARD_TEST_DATABASE_URL is set) real PostgreSQL, real workers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import nats
import pytest
from nats.js.errors import NotFoundError

from core.builtin_tasks import default_registry
from core.embedded import NatsServer
from core.priority import Bucket
from core.registry import TaskRegistry
from core.runtime import Runtime, prepare_database
from core.settings import Settings
from core.users import create_user
from core.worker import Worker, WorkerScope, WorkerThread
from db.engine import Database

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("SWITCHYARD_TEST_DATABASE_URL")
DATABASES = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
PASSWORD = "correct horse battery"
ROLE_USERS = {"viewer": "vera", "operator": "otto", "manager": "mona", "admin": "ada"}


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory) -> NatsServer:
    server = NatsServer(tmp_path_factory.mktemp("nats"), sync_always=False).start()
    yield server
    server.stop()


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'switchyard.db'}"
    return POSTGRES_URL


def make_settings(tmp_path: Path, nats_url: str, database_url: str, **overrides) -> Settings:
    values = dict(
        data_dir=tmp_path,
        nats_url=nats_url,
        database_url=database_url,
        lease_seconds=2.0,
        reaper_interval_seconds=0.3,
        relay_interval_seconds=0.2,
        reconcile_interval_seconds=1.0,
        idle_resweep_seconds=0.5,
        retry_backoff_seconds=0.05,
        retry_backoff_max_seconds=0.2,
        broker_timeout_seconds=2.0,
    )
    values.update(overrides)
    return Settings(**values)


def reset_stream(url: str, stream: str) -> None:
    async def reset() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jsm().delete_stream(stream)
        except NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(reset())


@pytest.fixture
def settings(tmp_path, nats_server, database_url) -> Settings:
    settings = make_settings(tmp_path, nats_server.url, database_url)
    reset_stream(nats_server.url, settings.stream_name)
    db = Database(database_url)
    db.drop_schema()
    prepare_database(db)
    for role, username in ROLE_USERS.items():
        create_user(db, username, PASSWORD, role)
    db.dispose()
    return settings


class Recorder:
    """Collects worker events in order: ('started', task_id), ('succeeded', task_id) ..."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, event: str, task_id: str) -> None:
        with self._changed:
            self.events.append((event, task_id))
            self._changed.notify_all()

    def of(self, kind: str) -> list[str]:
        with self._lock:
            return [task for event, task in self.events if event == kind]

    def counts(self, kind: str) -> dict[str, int]:
        counted: dict[str, int] = defaultdict(int)
        for task in self.of(kind):
            counted[task] += 1
        return counted

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; events so far: {self.events[-20:]}")
                self._changed.wait(min(remaining, 0.1))


@pytest.fixture
def registry() -> TaskRegistry:
    return default_registry()


@pytest.fixture
def runtime(settings, registry) -> Runtime:
    runtime = Runtime.open(settings, registry=registry, require_broker=True)
    yield runtime
    runtime.close()


@pytest.fixture
def start_worker(settings, registry):
    """start_worker(recorder, buckets=..., categories=..., phases=..., concurrency=...)"""
    started: list[tuple[WorkerThread, Database]] = []

    def start(
        recorder: Recorder | None = None,
        *,
        buckets: tuple[Bucket, ...] = (Bucket.HIGH, Bucket.NORMAL, Bucket.LOW),
        categories: tuple[str, ...] = (),
        phases: tuple[str, ...] = (),
        concurrency: int = 1,
        maintenance: bool = True,
        worker_settings: Settings | None = None,
    ) -> Worker:
        db = Database((worker_settings or settings).resolved_database_url)
        worker = Worker(
            worker_settings or settings,
            db,
            registry,
            (worker_settings or settings).nats_url,
            scope=WorkerScope(buckets, categories, phases),
            concurrency=concurrency,
            maintenance=maintenance,
            on_event=recorder,
        )
        started.append((WorkerThread(worker).start(), db))
        return worker

    yield start
    for thread, db in started:
        thread.stop()
        db.dispose()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message}")
        time.sleep(interval)


@pytest.fixture
def console(dash_duo, settings, runtime):
    """The console served to a headless Chromium (the browser tests)."""
    from dashboard.app import create_app

    app = create_app(settings, runtime)
    dash_duo.start_server(app, navigate=False)
    # A desktop window: at headless Chrome's 800 x 600 the pages stack into one column that is
    # still growing while a test clicks, and a click can land on the wrong element.
    dash_duo.driver.set_window_size(1400, 1000)
    return dash_duo
