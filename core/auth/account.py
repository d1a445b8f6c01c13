"""What every signed-in user may do to their own account: change their password (the current
one required), choose how times are shown, see their sessions and sign the others out. Each
change is audited; a password change ends every other session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.auth.audit import audit, run_audited
from core.auth.passwords import hash_password, validate_password, verify_password
from core.auth.policy import authorize
from core.errors import InvalidInput, NotAllowed
from core.timefmt import check_zone
from db.engine import Database
from db.models import utcnow
from db.queries import users as user_queries


@dataclass(frozen=True)
class SessionInfo:
    """One of the user's browser sessions (never its token)."""

    key: str  # an opaque handle for "sign this one out": a hash of the token
    created_at: datetime
    last_seen_at: datetime | None
    address: str | None
    current: bool


def change_password(
    db: Database, actor: object, current: object, new: object, *, keep: str | None = None, address: str | None = None
) -> None:
    """A new password for the acting user, who gives the current one. Every session but `keep`
    (the one making the change) ends."""

    def operation() -> None:
        acting = authorize(db, actor, None, action="account.password", address=address)
        secret = validate_password(new)
        with db.session() as session:
            user = user_queries.user_named(session, acting.username)
            stored = user.password_hash if user is not None else ""
        if not isinstance(current, str) or not verify_password(stored, current):
            raise NotAllowed("the current password is not right")
        new_hash = hash_password(secret)
        with db.session(write=True) as session:
            user = user_queries.user_named(session, acting.username, lock=True)
            if user is None or user.password_hash != stored:
                raise InvalidInput("your password was changed meanwhile: sign in again")
            user.password_hash = new_hash
            user.session_version += 1
            user.updated_at = utcnow()
            if keep is not None:  # the session that made the change stays signed in
                user_queries.keep_web_session(session, keep, user.session_version)
            audit(session, actor=acting.username, action="account.password", target=acting.username, address=address)

    run_audited(db, actor, "account.password", actor, address, operation)


def set_time_zone(db: Database, actor: object, zone_name: object, *, address: str | None = None) -> str:
    """How the console shows times to the acting user: UTC or an IANA zone (their browser's)."""

    def operation() -> str:
        acting = authorize(db, actor, None, action="account.time_zone", address=address)
        checked = check_zone(zone_name)
        with db.session(write=True) as session:
            user = user_queries.user_named(session, acting.username, lock=True)
            if user is not None:
                user.time_zone = checked
        return checked

    return run_audited(db, actor, "account.time_zone", actor, address, operation)


def my_sessions(db: Database, actor: object, current_token: str | None) -> list[SessionInfo]:
    """The acting user's sessions that still work, the newest first."""
    acting = authorize(db, actor, None, action="account.sessions")
    with db.session() as session:
        user = user_queries.user_named(session, acting.username)
        rows = user_queries.live_web_sessions(session, user.id, user.session_version) if user else []
    return [
        SessionInfo(user_queries.session_key(r.id), r.created_at, r.last_seen_at, r.address, r.id == current_token)
        for r in rows
    ]


def sign_out_others(db: Database, actor: object, current_token: str | None, *, address: str | None = None) -> int:
    """End every session of the acting user but this one. Returns how many ended."""

    def operation() -> int:
        acting = authorize(db, actor, None, action="account.sessions", address=address)
        with db.session(write=True) as session:
            user = user_queries.user_named(session, acting.username)
            ended = (
                user_queries.end_web_sessions(session, user.id, user.session_version, except_token=current_token)
                if user
                else 0
            )
            audit(
                session, actor=acting.username, action="account.sign_out_others", target=acting.username,
                detail=f"{ended} session(s)", address=address,
            )  # fmt: skip
        return ended

    return run_audited(db, actor, "account.sign_out_others", actor, address, operation)
