"""gunicorn settings for the console (see dashboard/wsgi.py and docs/deploy.md).

Processes: SWITCHYARD_WEB_PROCESSES (default 2), each with SWITCHYARD_WEB_THREADS threads
(default 8); address: SWITCHYARD_HOST / SWITCHYARD_PORT. Prometheus counters of all web
processes are added up through files under DATA_DIR/metrics (prometheus-client's
multiprocess mode); the directory is emptied when gunicorn starts.
"""

from __future__ import annotations

import os
import shutil

from core.settings import load_settings

_settings = load_settings()
_metrics_dir = (_settings.data_dir / "metrics").resolve()
# prometheus-client picks its storage when first imported, and the workers inherit the master's
# imports: the variable must be set before anything here imports it.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_processes
threads = _settings.web_threads
worker_class = "gthread"
timeout = 60
graceful_timeout = 20
accesslog = None  # the app logs each request itself, as JSON with its request id


def on_starting(server) -> None:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True, exist_ok=True)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
