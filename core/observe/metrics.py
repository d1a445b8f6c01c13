"""Prometheus metrics.

Two kinds, because some numbers belong to a process and some to the whole system:

- Counters and histograms count what this process did (tasks it dispatched, runs its worker
  slots recorded, upgrades people made through it). Every process exposes its own: the web
  console at /metrics, a `run.py worker --metrics-port N` on its own port. Under gunicorn, set
  PROMETHEUS_MULTIPROC_DIR and the web processes add theirs up (prometheus-client's
  multiprocess mode).
- Gauges describe the system (messages waiting per bucket and subject, tasks per status, the
  relay's backlog, the oldest queued task, workers online). They come from the overview
  snapshot the web process refreshes anyway, so a scrape costs no broker or database call.
  Every web process reports the same values: aggregate them with max(), not sum().
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from core.errors import InvalidInput

WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, float("inf"))
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, float("inf"))

DISPATCHED = Counter("switchyard_tasks_dispatched", "Tasks dispatched (rows committed)", ["category", "bucket"])
COMPLETED = Counter("switchyard_tasks_completed", "Task runs that succeeded", ["bucket"])
FAILED = Counter("switchyard_tasks_failed", "Task runs that failed for good (no attempts left)", ["bucket"])
RETRIED = Counter(
    "switchyard_tasks_retried", "Failed runs queued again: 'automatic' after a backoff, 'manual' by Retry", ["how"]
)
UPGRADES = Counter("switchyard_upgrades", "Priority upgrades", ["action"])
CANCELLED = Counter("switchyard_tasks_cancelled", "Queued tasks cancelled")
QUEUE_WAIT = Histogram(
    "switchyard_queue_wait_seconds", "From queued to started, per bucket", ["bucket"], buckets=WAIT_BUCKETS
)
RUN_TIME = Histogram("switchyard_run_seconds", "Task run time, per bucket", ["bucket"], buckets=RUN_BUCKETS)


class SnapshotCollector:
    """System gauges from the latest overview snapshot (see core.observe.snapshot)."""

    def __init__(self, latest: Callable[[], dict[str, Any] | None]):
        self._latest = latest

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._latest() or {}
        broker = snapshot.get("broker") or {}
        database = snapshot.get("database") or {}
        up = GaugeMetricFamily("switchyard_snapshot_ok", "1 if the last snapshot reached broker and database")
        up.add_metric([], 0 if snapshot.get("errors") or not snapshot else 1)
        yield up
        if broker:
            queued = GaugeMetricFamily("switchyard_queued_messages", "Messages waiting per bucket", labels=["bucket"])
            for bucket, count in broker.get("buckets", {}).items():
                queued.add_metric([bucket], count)
            yield queued
            per_subject = GaugeMetricFamily(
                "switchyard_queued_messages_by_subject", "Messages waiting per subject", labels=["subject"]
            )
            for subject, count in broker.get("subjects", {}).items():
                per_subject.add_metric([subject], count)
            yield per_subject
        if database:
            tasks = GaugeMetricFamily("switchyard_tasks", "Tasks per status (database)", labels=["status"])
            for status, count in database.get("status", {}).items():
                tasks.add_metric([status], count)
            yield tasks
            oldest = GaugeMetricFamily(
                "switchyard_oldest_queued_seconds", "Age of the oldest queued task per bucket", labels=["bucket"]
            )
            for bucket, entry in database.get("buckets", {}).items():
                oldest.add_metric([bucket], entry.get("oldest_age_seconds") or 0)
            yield oldest
        if "relay_backlog" in snapshot:
            backlog = GaugeMetricFamily("switchyard_relay_backlog", "Rows that owe the stream a message, past due")
            backlog.add_metric([], snapshot["relay_backlog"])
            yield backlog
        workers = GaugeMetricFamily("switchyard_workers_online", "Workers seen in the last 15 seconds")
        workers.add_metric([], len(snapshot.get("workers") or []))
        yield workers


LEASES_EXPIRED = Counter(
    "switchyard_leases_expired", "Running tasks whose worker stopped answering", ["outcome"]
)  # outcome: requeued | failed (no attempts left)


def exposition(system: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The text this process serves at /metrics: its own counters (all web processes' together
    in multiprocess mode) and, if given, the system gauges."""
    # prometheus-client's own variable, which it reads itself when it is imported.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own = CollectorRegistry()
        MultiProcessCollector(own)
    else:
        own = REGISTRY
    body = generate_latest(own)
    if system is not None:
        body += generate_latest(system)
    return body, CONTENT_TYPE_LATEST


def system_registry(latest: Callable[[], dict[str, Any] | None]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(latest))
    return registry


def serve_metrics(port: int, host: str) -> None:
    """This process's metrics over HTTP on their own port (a worker process)."""
    try:
        start_http_server(port, addr=host)
    except OSError as error:
        raise InvalidInput(f"--metrics-port {port}: {error.strerror or error}") from None
