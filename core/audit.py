"""The audit log: one row per action, denial, sign-in and user change."""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from sqlalchemy.orm import Session

from core.errors import DatabaseUnavailable, NotAllowed, SwitchyardError
from db.models import AuditLog, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

OK = "ok"
DENIED = "denied"
REFUSED = "refused"


def audit(
    session: Session,
    *,
    actor: str | None,
    action: str,
    target: str | None = None,
    outcome: str = OK,
    detail: str | None = None,
    address: str | None = None,
) -> None:
    session.add(
        AuditLog(
            at=utcnow(),
            actor=storable(actor, 64) if actor else None,
            action=action[:32],
            target=None if target is None else storable(target, 128),
            outcome=outcome,
            detail=None if detail is None else storable(detail, 2000),
            address=address,
        )
    )


def storable(value: object, limit: int) -> str:
    """A (possibly hostile) value as text every database stores: PostgreSQL refuses NUL bytes."""
    return str(value).replace("\x00", "\N{REPLACEMENT CHARACTER}")[:limit]


def audit_name(value: object) -> str:
    """A bounded form of a (possibly hostile) user or token name for messages and audit rows."""
    return storable(value, 64) if value is not None else ""


def record(
    db,
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
                actor=actor or None,
                action=action,
                target=target or None,
                outcome=outcome,
                detail=detail,
                address=address,
            )
    except DatabaseUnavailable:
        log.warning("could not audit %s %s: database unavailable", outcome, action)


def run_audited(db, actor: object, action: str, target: object, address: str | None, operation: Callable[[], T]) -> T:
    """Run an operation; if core refuses it, record the refusal in a transaction of its own
    (denials are recorded by authorize, where they happen)."""
    try:
        return operation()
    except (NotAllowed, DatabaseUnavailable):
        raise
    except SwitchyardError as error:
        record(db, actor=actor, action=action, target=target, outcome=REFUSED, detail=str(error), address=address)
        raise
