"""Shared plumbing for the benchmarks: a private nats-server, a throwaway database, a summary.

Every benchmark measures its raw nats-py baseline in the same process run as Switchyard's own
figure (the machine is noisy), repeats a few times and keeps the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, func, select  # noqa: E402

from core.broker.embedded import NatsServer, nats_server_binary  # noqa: E402
from core.runtime import prepare_database  # noqa: E402
from core.settings import Settings  # noqa: E402
from db.engine import Database  # noqa: E402
from db.models import AuditLog, PriorityHistory, Task  # noqa: E402

DATABASE_URL_ENV = "SWITCHYARD_BENCH_DATABASE_URL"

T = TypeVar("T")


# -- command line -------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed (default: just print)")
    p.add_argument("--repeats", type=int, default=3, help="measurements of each side; the median is kept")
    p.add_argument(
        "--sync-always",
        action="store_true",
        help="run nats-server with sync_interval: always (default: the server's default fsync interval)",
    )
    p.add_argument("--json-out", help=argparse.SUPPRESS)  # run_all.py collects results through this
    return p


# -- statistics ---------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def percentile(values: Iterable[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


# -- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary. `higher_is_better` decides how the target is read."""

    bench: str
    metric: str
    ours: float
    baseline: float | None
    unit: str
    target: str
    passed: bool | None  # None: informational, no target
    digits: int = 0

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or self.baseline != self.baseline:
            return None
        return self.ours / self.baseline


def print_table(rows: list[Row], title: str = "Summary") -> None:
    header = ("bench", "metric", "ours", "baseline", "ratio", "target", "result")
    body = []
    for r in rows:
        ratio = r.ratio
        body.append(
            (
                r.bench,
                r.metric,
                f"{fmt(r.ours, r.digits)} {r.unit}".strip(),
                f"{fmt(r.baseline, r.digits)} {r.unit}".strip() if r.baseline is not None else "-",
                "-" if ratio is None else f"{ratio:.2f}",
                r.target or "-",
                "info" if r.passed is None else ("PASS" if r.passed else "FAIL"),
            )
        )
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    line = "  ".join("{:<%d}" % w for w in widths)
    print()
    print(f"== {title} ==")
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for values in body:
        print(line.format(*values))
    sys.stdout.flush()


def finish(args: argparse.Namespace, rows: list[Row], context: dict[str, Any], title: str) -> int:
    """Print the summary, hand it to run_all.py if asked, and choose the exit code."""
    print_table(rows, title)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": [asdict(r) for r in rows], "context": context}, indent=2))
    missed = [r for r in rows if r.passed is False]
    if missed and args.check:
        print(f"\n{len(missed)} target(s) missed (--check): exit 1")
        return 1
    return 0


# -- environment --------------------------------------------------------------------------------


def nats_server_version() -> str:
    try:
        out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or out.stderr.strip()
    except Exception as error:  # informational only
        return f"unknown ({error})"


def _terminate_on_sigterm() -> None:
    """SIGTERM becomes SystemExit so `with BenchEnv()` still stops nats-server and removes temp dirs."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


class BenchEnv:
    """A private nats-server (store under a mkdtemp dir) and a database for one benchmark.

    SQLite in the temp dir by default; SWITCHYARD_BENCH_DATABASE_URL (e.g. PostgreSQL) when
    set, in which case the schema is dropped and prepared afresh.
    """

    def __init__(self, name: str, *, sync_always: bool = False, **settings_overrides: Any):
        self.name = name
        self.sync_always = sync_always
        self.settings_overrides = settings_overrides
        self.tmp: Path | None = None
        self.server: NatsServer | None = None
        self.settings: Settings | None = None
        self.database_url: str = ""

    def __enter__(self) -> "BenchEnv":
        _terminate_on_sigterm()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"switchyard-bench-{self.name}-"))
        try:
            self.server = NatsServer(self.tmp / "nats", sync_always=self.sync_always).start()
            url = os.environ.get(DATABASE_URL_ENV, "").strip()
            self.database_url = url or f"sqlite:///{(self.tmp / 'data' / 'switchyard.db').resolve()}"
            db = Database(self.database_url)
            try:
                db.drop_schema()
                prepare_database(db)
            finally:
                db.dispose()
            self.settings = Settings(
                data_dir=self.tmp / "data",
                nats_url=self.server.url,
                database_url=self.database_url,
                **self.settings_overrides,
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.server is not None:
            self.server.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def backend(self) -> str:
        return "postgresql" if self.database_url.startswith("postgresql") else "sqlite"

    def describe(self) -> dict[str, Any]:
        info = {
            "nats_server": nats_server_version(),
            "nats_sync": "sync_interval: always" if self.sync_always else "default fsync interval (sync_always=False)",
            "database": self.backend
            + (" (" + _safe_url(self.database_url) + ")" if self.backend != "sqlite" else " (temp file, WAL)"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        for key, value in info.items():
            print(f"  {key:12} {value}")
        sys.stdout.flush()
        return info


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def clear_tasks(db: Database) -> None:
    """Empty the tables the benchmarks fill, so every run starts from the same state."""
    with db.session(write=True) as session:
        session.execute(delete(Task))
        session.execute(delete(PriorityHistory))
        session.execute(delete(AuditLog))


def count_tasks(db: Database, *conditions: Any) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Task).where(*conditions))


# -- asyncio on a thread ------------------------------------------------------------------------


class LoopThread:
    """An event loop on a daemon thread; `run()` hands it a coroutine and waits for the result.

    The raw nats-py baselines run on one of these, the same way Switchyard's BrokerThread does.
    """

    def __init__(self, name: str = "bench-loop"):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Awaitable[T], timeout: float = 300.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def timed(function: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value
