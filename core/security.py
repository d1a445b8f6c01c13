"""Sign-in throttling, the permission check for what a signed-in user reads, and what became of
a browser session (for the audit row of a request made with a dead one).

Throttling keeps no state of its own: the audit log already holds every sign-in attempt with its
account, address and time, so every web process counts the same rows. An attempt is written as
a failure before its password is checked (and turned into a success afterwards), so attempts
running at the same moment count each other and a burst cannot get more than the limit through.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.audit import DENIED, OK, record
from core.errors import NotAllowed
from core.permissions import Permission
from db.engine import Database
from db.models import AuditLog, User, WebSession

SIGN_IN = "sign_in"
WRONG_CREDENTIALS = "wrong user name or password"

PERMISSION_PHRASES = {
    Permission.VIEW_DASHBOARD: "view the dashboard",
    Permission.VIEW_TASKS: "view tasks",
    Permission.VIEW_HISTORY: "view the priority history",
    Permission.MANAGE_USERS: "manage users",
    Permission.PRIORITIZE_TASKS: "prioritize tasks",
    Permission.URGENT_TASKS: "make tasks urgent",
    Permission.CANCEL_TASKS: "cancel tasks",
    Permission.CRITICAL_TASKS: "make tasks critical",
}


class SignInThrottled(NotAllowed):
    """Too many failed sign-ins for the account or the address; `retry_after` in seconds."""

    def __init__(self, retry_after: float):
        self.retry_after = max(1, math.ceil(retry_after))
        minutes = max(1, math.ceil(self.retry_after / 60))
        super().__init__(f"too many failed sign-ins: try again in {minutes} minute{'s' if minutes > 1 else ''}")


@dataclass(frozen=True)
class LoginLimits:
    """At most `per_account` failed sign-ins for one user name (counted since its last successful
    sign-in) and `per_address` from one address, in any `window_seconds`."""

    per_account: int = 5
    per_address: int = 20
    window_seconds: float = 900.0

    @classmethod
    def from_settings(cls, settings) -> "LoginLimits":
        return cls(settings.login_max_failures, settings.login_max_failures_per_address, settings.login_window_seconds)


def _failures(since: datetime):
    return select(AuditLog.at).where(
        AuditLog.action == SIGN_IN,
        AuditLog.outcome == DENIED,
        AuditLog.detail == WRONG_CREDENTIALS,
        AuditLog.at > since,
    )


def throttle_wait(session: Session, limits: LoginLimits, name: str | None, address: str | None, now: datetime):
    """Seconds until this account and address may try again, or None when they may now.

    Run in the write transaction that records the attempt: on SQLite that transaction already
    holds the write lock; on PostgreSQL two advisory locks (account, then address) make
    concurrent attempts for the same account or address count one after the other."""
    if session.get_bind().dialect.name == "postgresql":
        for key in (f"sign_in:actor:{name}", f"sign_in:address:{address}"):
            session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
    window = timedelta(seconds=limits.window_seconds)
    waits: list[float] = []
    checks = []
    if name:
        last_success = (
            select(func.coalesce(func.max(AuditLog.id), 0))
            .where(AuditLog.action == SIGN_IN, AuditLog.outcome == OK, AuditLog.actor == name)
            .scalar_subquery()
        )
        checks.append((_failures(now - window).where(AuditLog.actor == name, AuditLog.id > last_success),
                       limits.per_account))  # fmt: skip
    if address:
        checks.append((_failures(now - window).where(AuditLog.address == address), limits.per_address))
    for query, limit in checks:
        times = session.scalars(query.order_by(AuditLog.at.desc()).limit(limit)).all()
        if len(times) >= limit:
            waits.append((times[-1] + window - now).total_seconds())
    return max(waits) if waits else None


def require_permission(
    db: Database, actor, permission: Permission, *, action: str, target: str | None, address: str | None
) -> None:
    """For reads by a user whose permissions were loaded from the database for this request
    (core.users.session_user): a denial is audited and raised as NotAllowed."""
    if actor.can(permission):
        return
    message = f"not allowed: {actor.role.value} {actor.username!r} may not {PERMISSION_PHRASES[permission]}"
    record(db, actor=actor.username, action=action, target=target, outcome=DENIED, detail=message, address=address)
    raise NotAllowed(message)


def describe_dead_session(db: Database, token: object) -> tuple[str | None, str]:
    """Whose a session no longer valid was, and why it stopped working."""
    if not isinstance(token, str) or not 0 < len(token) <= 64:
        return None, "not signed in"
    with db.session() as session:
        web_session = session.get(WebSession, token)
        if web_session is None:
            return None, "unknown session"
        user = session.get(User, web_session.user_id)
        if user is None:
            return None, "session of a deleted user"
        if web_session.ended_at is not None:
            why = "session signed out"
        elif not user.active:
            why = "session of a disabled user"
        elif user.session_version != web_session.session_version:
            why = "session ended by a password or role change"
        else:
            why = "session no longer valid"
        return user.username, why


_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


def dummy_password_hash() -> str:
    """A hash to verify against when there is no user, so an unknown name costs what a wrong
    password costs (made once, with the same parameters as real hashes)."""
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            from core.users import hash_password

            _dummy_hash = hash_password("switchyard: no such user")
        return _dummy_hash
