"""Readiness: can this process do its job right now? Cheap, and says nothing about the tasks.

A load balancer or orchestrator calls it every few seconds; it costs one `SELECT 1`, one
schema-version read, and two round trips to the broker (is it there, is the stream there).
"""

from __future__ import annotations

import asyncio
from typing import Callable

from core.broker.jetstream import BrokerThread
from core.errors import SwitchyardError
from db.engine import Database

OK = "ok"


def readiness(db: Database, broker: BrokerThread | None, schema_check: Callable[[Database], None]) -> dict[str, str]:
    """{"database": ..., "schema": ..., "broker": ...}, each "ok" or a short reason."""
    checks: dict[str, str] = {}
    try:
        db.ping()
        checks["database"] = OK
    except SwitchyardError:
        checks["database"] = "unavailable"
    if checks["database"] == OK:
        try:
            schema_check(db)
            checks["schema"] = OK
        except SwitchyardError:
            checks["schema"] = "outdated"
    else:
        checks["schema"] = "unknown"
    checks["broker"] = _broker_state(broker)
    return checks


def _broker_state(broker: BrokerThread | None) -> str:
    if broker is None or not broker.broker.connected:
        return "unavailable"
    try:
        broker.run(asyncio.wait_for(broker.broker.client.flush(), 2.0))
        if not broker.run(broker.broker.stream_exists()):
            broker.run(broker.broker.recover_topology())  # for the next check; not ready now
            return "stream missing"
        return OK
    except Exception:  # a timeout or a closed connection, in any of nats-py's shapes
        return "unavailable"


def is_ready(checks: dict[str, str]) -> bool:
    return all(value == OK for value in checks.values())
