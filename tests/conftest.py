"""Shared fixtures: a real nats-server from the wheel, real SQLite and (when
SWITCHYARD_TEST_DATABASE_URL is set) real PostgreSQL, real workers."""

from __future__ import annotations

import pytest

from core.auth.users import create_user
from core.broker.embedded import NatsServer
from core.engine.worker import Worker, WorkerScope, WorkerThread
from core.priority import Bucket
from core.runtime import Runtime, prepare_database
from core.settings import Settings
from core.tasks.builtin import default_registry
from core.tasks.registry import TaskRegistry
from db.engine import Database
from tests.support.constants import DATABASES, PASSWORD, POSTGRES_URL, ROLE_USERS
from tests.support.harness import Recorder, make_settings, private_database, reset_stream


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory) -> NatsServer:
    server = NatsServer(tmp_path_factory.mktemp("nats"), sync_always=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A database of this run's own on the server SWITCHYARD_TEST_DATABASE_URL names, so runs that
    share the server (CI and a developer's) never meet each other's tables."""
    with private_database(POSTGRES_URL) as url:
        yield url


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'switchyard.db'}"
    return request.getfixturevalue("postgres_url")


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
    """start_worker(recorder, buckets=..., categories=..., phases=..., concurrency=...);
    start_worker.stop_all() stops them before the test ends."""
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

    def stop_all() -> None:
        """Stop every worker started so far (a test that wants no more runs from here on)."""
        while started:
            thread, db = started.pop()
            thread.stop()
            db.dispose()

    start.stop_all = stop_all  # type: ignore[attr-defined]
    yield start
    stop_all()


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
