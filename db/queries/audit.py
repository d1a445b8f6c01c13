"""The audit log: one row per action, denial, sign-in and user change; and the sign-in failures
that throttling counts (it keeps no state of its own)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.engine import rows_changed
from db.models import AuditLog

# An entry's outcome.
OK = "ok"
DENIED = "denied"
REFUSED = "refused"


def add_entry(
    session: Session,
    *,
    at: datetime,
    actor: str | None,
    action: str,
    target: str | None,
    outcome: str,
    detail: str | None,
    address: str | None,
) -> AuditLog:
    entry = AuditLog(at=at, actor=actor, action=action, target=target, outcome=outcome, detail=detail, address=address)
    session.add(entry)
    return entry


def add_entry_now(session: Session, **values) -> int:
    """add_entry, flushed: returns the row's id (to change its outcome later in the transaction)."""
    entry = add_entry(session, **values)
    session.flush()
    return entry.id


def count_again(
    session: Session,
    *,
    now: datetime,
    since: datetime,
    actor: str | None,
    action: str,
    target: str | None,
    detail: str,
    address: str | None,
) -> bool:
    """Add one to the count of the matching `denied` row written since `since` (and make its time
    the latest's); False if there is none."""
    same = [
        AuditLog.action == action,
        AuditLog.address.is_(None) if address is None else AuditLog.address == address,
        AuditLog.at >= since,
        AuditLog.outcome == "denied",
        AuditLog.detail == detail,
        AuditLog.actor.is_(None) if actor is None else AuditLog.actor == actor,
        AuditLog.target.is_(None) if target is None else AuditLog.target == target,
    ]
    result = session.execute(
        update(AuditLog)
        .where(*same)
        .values(count=AuditLog.count + 1, at=now)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(result) > 0


def set_outcome(session: Session, entry_id: int, outcome: str, detail: str | None) -> None:
    session.execute(update(AuditLog).where(AuditLog.id == entry_id).values(outcome=outcome, detail=detail))


def failure_times(
    session: Session,
    *,
    action: str,
    failure_outcome: str,
    failure_detail: str,
    success_outcome: str,
    since: datetime,
    limit: int,
    actor: str | None = None,
    address: str | None = None,
) -> list[datetime]:
    """The newest `limit` failures (by outcome and detail) of `action` after `since`, newest first:
    for an actor, counted since their last success; or for an address."""
    query = select(AuditLog.at).where(
        AuditLog.action == action,
        AuditLog.outcome == failure_outcome,
        AuditLog.detail == failure_detail,
        AuditLog.at > since,
    )
    if actor is not None:
        last_success = (
            select(func.coalesce(func.max(AuditLog.id), 0))
            .where(AuditLog.action == action, AuditLog.outcome == success_outcome, AuditLog.actor == actor)
            .scalar_subquery()
        )
        query = query.where(AuditLog.actor == actor, AuditLog.id > last_success)
    if address is not None:
        query = query.where(AuditLog.address == address)
    return list(session.scalars(query.order_by(AuditLog.at.desc()).limit(limit)).all())
