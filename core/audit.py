"""The audit log: one row per action, denial, sign-in and user change."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.models import AuditLog, utcnow

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
            actor=(actor or None) and str(actor)[:64],
            action=action[:32],
            target=None if target is None else str(target)[:128],
            outcome=outcome,
            detail=None if detail is None else str(detail)[:2000],
            address=address,
        )
    )
