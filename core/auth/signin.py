"""Signing in with a password, and the throttle in front of it.

Throttling keeps no state of its own: the audit log already holds every sign-in attempt with its
account, address and time, so every web process counts the same rows.

- Per address: at most `per_address` failures in the window, then the address waits for the
  window to pass (a guesser moving from account to account).
- Per account: after `per_account` failures (counted since the account's last successful
  sign-in) every further attempt waits a delay that doubles with each failure, from
  ACCOUNT_DELAY_SECONDS up to ACCOUNT_DELAY_CAP_SECONDS, counted from the last failure. A guesser
  gets one guess a minute at most; the owner is never locked out for longer than that.
- Attempts for one account are checked one at a time (a lock per account, held across the
  password check), so a burst of guesses cannot get more than the limit through, and the owner
  signing in from several tabs at once is not refused.
"""

from __future__ import annotations

import math
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.auth.audit import DENIED, OK, audit, storable
from core.auth.passwords import MAX_PASSWORD_LENGTH, dummy_password_hash, verify_password
from core.auth.permissions import Role
from core.errors import NotAllowed
from core.settings import Settings
from db import dialect
from db.engine import Database, Transaction
from db.models import utcnow
from db.queries import audit as audit_queries
from db.queries import users as user_queries

SIGN_IN = "sign_in"
WRONG_CREDENTIALS = "wrong user name or password"
ACCOUNT_DELAY_SECONDS = 5.0
ACCOUNT_DELAY_CAP_SECONDS = 60.0
ACCOUNT_DELAY_DOUBLINGS = 4  # 5, 10, 20, 40, then the cap


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
    def from_settings(cls, settings: Settings) -> "LoginLimits":
        return cls(settings.login_max_failures, settings.login_max_failures_per_address, settings.login_window_seconds)


@dataclass(frozen=True)
class SignedIn:
    """A successful sign-in: the session token the browser keeps, and who it is."""

    token: str
    username: str
    role: Role


def throttle_wait(
    session: Transaction, limits: LoginLimits, name: str | None, address: str | None, now: datetime
) -> float | None:
    """Seconds until this account and address may try again, or None when they may now.

    Run in the write transaction that records the attempt, so concurrent attempts from one
    address count one after the other (db.dialect.serialize_by_keys)."""
    dialect.serialize_by_keys(session, f"sign_in:address:{address}")
    window = timedelta(seconds=limits.window_seconds)
    waits: list[float] = []
    if address:
        times = _failures(session, now - window, limits.per_address, address=address)
        if len(times) >= limits.per_address:
            waits.append((times[-1] + window - now).total_seconds())
    if name:
        times = _failures(session, now - window, limits.per_account + ACCOUNT_DELAY_DOUBLINGS, actor=name)
        beyond = len(times) - limits.per_account
        if beyond >= 0:
            delay = min(ACCOUNT_DELAY_SECONDS * 2**beyond, ACCOUNT_DELAY_CAP_SECONDS)
            wait = (times[0] + timedelta(seconds=delay) - now).total_seconds()
            if wait > 0:
                waits.append(wait)
    return max(waits) if waits else None


def _failures(session: Transaction, since: datetime, limit: int, **who: str) -> list[datetime]:
    return audit_queries.failure_times(
        session,
        action=SIGN_IN,
        failure_outcome=DENIED,
        failure_detail=WRONG_CREDENTIALS,
        success_outcome=OK,
        since=since,
        limit=limit,
        **who,
    )


# Attempts for one account take turns in this process (and, on PostgreSQL, across processes:
# Database.exclusive). Striped: a bounded set of locks whatever names are tried.
_ACCOUNT_LOCKS = [threading.Lock() for _ in range(64)]


def _account_lock(name: str) -> threading.Lock:
    return _ACCOUNT_LOCKS[hash(name) % len(_ACCOUNT_LOCKS)]


def authenticate(
    db: Database,
    username: object,
    password: object,
    *,
    address: str | None = None,
    limits: LoginLimits | None = None,
) -> SignedIn:
    """Check a password. Unknown users, disabled users and wrong passwords get the same message
    and cost the same time (a password hash is checked either way); every attempt is one audit
    row. Too many recent failures for the name or the address refuse the attempt unchecked
    (SignInThrottled), whatever the password."""
    limits = limits or LoginLimits()
    name = storable(username, 64) if isinstance(username, str) else ""
    with _account_lock(name), db.exclusive(f"sign_in:actor:{name}"):
        return _authenticate(db, name, username, password, address, limits)


def _authenticate(
    db: Database, name: str, username: object, password: object, address: str | None, limits: LoginLimits
) -> SignedIn:
    known: tuple[int, str, int] | None = None
    with db.session(write=True) as session:
        now = utcnow()
        wait = throttle_wait(session, limits, name, address, now)
        if wait is not None:
            throttled = SignInThrottled(wait)
            audit(
                session,
                actor=name or None,
                action=SIGN_IN,
                target=name or None,
                outcome=DENIED,
                detail=f"throttled: {throttled}",
                address=address,
            )
        else:
            # Written as a failure now and turned into a success below: attempts in flight count.
            attempt_id = audit_queries.add_entry_now(
                session,
                at=now,
                actor=name or None,
                action=SIGN_IN,
                target=name or None,
                outcome=DENIED,
                detail=WRONG_CREDENTIALS,
                address=address,
            )
            lookup = name and isinstance(username, str) and len(username) <= 64
            user = user_queries.user_named(session, name) if lookup else None
            known = (user.id, user.password_hash, user.session_version) if user is not None and user.active else None
    if wait is not None:
        raise throttled
    # The slow hash runs outside any transaction.
    usable = isinstance(password, str) and len(password) <= MAX_PASSWORD_LENGTH
    candidate = password if isinstance(password, str) and usable else ""
    matches = verify_password(known[1] if known else dummy_password_hash(), candidate)
    if not (known and usable and matches):
        raise NotAllowed(WRONG_CREDENTIALS)
    with db.session(write=True) as session:
        user = user_queries.user_by_id(session, known[0])
        if user is None or not user.active or user.password_hash != known[1]:
            raise NotAllowed(WRONG_CREDENTIALS)  # disabled or given a new password meanwhile
        now = utcnow()
        audit_queries.set_outcome(session, attempt_id, OK, None)
        user.last_login_at = now
        token = secrets.token_urlsafe(32)
        user_queries.add_web_session(session, token, user.id, user.session_version, now, address)
        return SignedIn(token, user.username, Role(user.role))
