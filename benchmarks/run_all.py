"""Run every benchmark, one process each, and print one combined summary.

    .venv/bin/python benchmarks/run_all.py [--check] [--only dispatch,worker,upgrade,console] [--sync-always]

Each script starts its own nats-server and database (SWITCHYARD_BENCH_DATABASE_URL is passed
through), prints its own figures, and hands its summary rows back through a JSON file.
With --check the exit code is 1 when a target is missed; a script that crashes or overruns
its time limit always makes the exit code non-zero (2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Row, print_table  # noqa: E402

SCRIPTS = {
    "dispatch": "bench_dispatch.py",
    "upgrade": "bench_upgrade_latency.py",
    "worker": "bench_worker.py",
    "console": "bench_console.py",
}
TIME_LIMIT_SECONDS = 300  # each script is meant to finish in under ~3 minutes on 2 cores
# bench_console.py seeds 1,000,000 tasks first (about a minute) and starts the web process.
TIME_LIMITS = {"console": 900}


def run(command: list[str], label: str, limit: int = TIME_LIMIT_SECONDS) -> int | None:
    """The script's exit code, or None if it overran (it is asked to stop: SIGTERM lets it
    stop its nats-server and remove its temp dir; SIGKILL after 20 s)."""
    child = subprocess.Popen(command)
    try:
        return child.wait(limit)
    except subprocess.TimeoutExpired:
        print(f"{label}: stopped after {limit} s", flush=True)
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return None
    except KeyboardInterrupt:
        child.terminate()
        child.wait(20)
        raise


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed (default: just print)")
    p.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset of: " + ", ".join(SCRIPTS))
    p.add_argument("--sync-always", action="store_true", help="nats-server with sync_interval: always")
    args = p.parse_args()

    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCRIPTS]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")

    rows: list[Row] = []
    crashed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-results-") as results:
        for name in chosen:
            out = Path(results) / f"{name}.json"
            command = [sys.executable, str(HERE / SCRIPTS[name]), "--json-out", str(out)]
            if args.check:
                command.append("--check")
            if args.sync_always:
                command.append("--sync-always")
            print(f"\n##### {SCRIPTS[name]} #####", flush=True)
            started = time.monotonic()
            code = run(command, SCRIPTS[name], TIME_LIMITS.get(name, TIME_LIMIT_SECONDS))
            print(f"({SCRIPTS[name]} took {time.monotonic() - started:.0f} s)", flush=True)
            if out.exists() and code in (0, 1):
                rows += [Row(**row) for row in json.loads(out.read_text())["rows"]]
            else:
                crashed.append(name)
                rows.append(
                    Row(name, "script crashed or overran (see its output above)", float("nan"), None, "", "runs", False)
                )

    print_table(rows, "Switchyard benchmarks: combined summary")
    if crashed:
        print(f"\ncrashed: {', '.join(crashed)}")
        return 2
    missed = [r for r in rows if r.passed is False]
    if missed and args.check:
        print(f"\n{len(missed)} target(s) missed (--check): exit 1")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
