"""The audit log: one row per action, denial, sign-in and user change.

Every operation a person performs runs through `run_audited`: a success is written by the
operation in its own transaction; a refusal (wrong state, bad input, not found) is written
afterwards as `refused`; a denial as `denied`, by `authorize` where it is decided (or, when it
was decided inside a transaction that rolled back, here).
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from core.errors import DatabaseUnavailable, NotAllowed, SwitchyardError
from core.sanitize import fit
from db.engine import Database, Transaction
from db.models import utcnow
from db.queries import audit as audit_queries

log = logging.getLogger(__name__)
T = TypeVar("T")

OK, DENIED, REFUSED = audit_queries.OK, audit_queries.DENIED, audit_queries.REFUSED


class Denied(NotAllowed):
    """A denial decided inside a transaction, which rolls back: `run_audited` records it."""


def audit(
    session: Transaction,
    *,
    actor: str | None,
    action: str,
    target: str | None = None,
    outcome: str = OK,
    detail: str | None = None,
    address: str | None = None,
) -> None:
    audit_queries.add_entry(
        session,
        at=utcnow(),
        actor=storable(actor, 64) if actor else None,
        action=storable(action, 32),
        target=None if target is None else storable(target, 128),
        outcome=outcome,
        detail=None if detail is None else storable(detail, 2000),
        address=address,
    )


def storable(value: object, limit: int) -> str:
    """A (possibly hostile) value as text every database stores, cut at the column's size."""
    return fit(value, limit)


def audit_name(value: object) -> str:
    """A bounded form of a (possibly hostile) user or token name for messages and audit rows."""
    return storable(value, 64) if value is not None else ""


def record(
    db: Database,
    *,
    actor: object,
    action: str,
    target: object = None,
    outcome: str,
    detail: str | None = None,
    address: str | None = None,
) -> None:
    """One audit row in a transaction of its own, for a refusal decided outside an operation's
    transaction (the operation rolled back, or never started). Never raises: an unreachable
    database is logged."""
    try:
        with db.session(write=True) as session:
            audit(
                session,
                actor=audit_name(actor) or None,
                action=action,
                target=None if target in (None, "") else str(target),
                outcome=outcome,
                detail=detail,
                address=address,
            )
    except DatabaseUnavailable:
        log.warning("could not audit %s %s: database unavailable", outcome, action)


def record_repeated(
    db: Database,
    *,
    actor: object,
    action: str,
    target: object = None,
    detail: str,
    address: str | None,
) -> None:
    """A refusal that comes in floods (an invalid API token, a request without a session): one
    `denied` row per address, refusal and minute, whose count goes up with each repeat. Never
    raises."""
    now = utcnow()
    who = storable(actor, 64) if actor else None
    what = storable(target, 128) if target not in (None, "") else None
    action, detail = storable(action, 32), storable(detail, 2000)
    minute = now.replace(second=0, microsecond=0)
    try:
        with db.session(write=True) as session:
            if not audit_queries.count_again(
                session, now=now, since=minute, actor=who, action=action, target=what, detail=detail, address=address
            ):
                audit_queries.add_entry(
                    session, at=now, actor=who, action=action, target=what, outcome=DENIED, detail=detail,
                    address=address,
                )  # fmt: skip
    except DatabaseUnavailable:
        log.warning("could not audit denied %s: database unavailable", action)


def run_audited(
    db: Database, actor: object, action: str, target: object, address: str | None, operation: Callable[[], T]
) -> T:
    """Run an operation a person asked for; record why, if core refused or denied it."""
    try:
        return operation()
    except Denied as error:
        record(db, actor=actor, action=action, target=target, outcome=DENIED, detail=str(error), address=address)
        raise
    except (NotAllowed, DatabaseUnavailable):
        raise  # a denial is recorded where it is decided; an outage cannot be recorded
    except SwitchyardError as error:
        record(db, actor=actor, action=action, target=target, outcome=REFUSED, detail=str(error), address=address)
        raise
