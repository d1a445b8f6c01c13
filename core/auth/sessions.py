"""Browser sessions: the cookie names a row, so signing out (or a password or role change, which
bumps the user's session_version) really ends a session, wherever its cookie was copied to.

A session also ends after `idle_seconds` without a request and `max_seconds` after its sign-in;
an expired session's row is deleted (pruned) when it is next presented, and every sign-in prunes
the rows of sessions that can no longer be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.auth.audit import audit
from core.auth.policy import Actor, load_actor
from core.settings import Settings
from db.engine import Database
from db.models import WebSession, utcnow
from db.queries import users as user_queries

LAST_SEEN_RESOLUTION = timedelta(seconds=60)  # last_seen_at is written at most once a minute


@dataclass(frozen=True)
class SessionLimits:
    idle_seconds: float = 8 * 3600.0
    max_seconds: float = 7 * 86400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "SessionLimits":
        return cls(settings.session_idle_seconds, settings.session_max_seconds)

    def expired(self, web_session: WebSession, now: datetime) -> bool:
        last = web_session.last_seen_at or web_session.created_at
        return now - web_session.created_at > timedelta(seconds=self.max_seconds) or now - last > timedelta(
            seconds=self.idle_seconds
        )


def session_user(db: Database, token: object, limits: SessionLimits = SessionLimits()) -> Actor | None:
    """The actor behind a browser session, if it is still valid: not signed out, not idle or
    old past its limits, the user exists and is active, and neither password nor role changed
    since the sign-in."""
    if not isinstance(token, str) or not 0 < len(token) <= 64:
        return None
    now = utcnow()
    with db.session() as session:
        web_session = user_queries.web_session(session, token)
        if web_session is None or web_session.ended_at is not None:
            return None
        expired = limits.expired(web_session, now)
        seen = web_session.last_seen_at or web_session.created_at
        user = user_queries.user_by_id(session, web_session.user_id)
        if expired or user is None or not user.active or user.session_version != web_session.session_version:
            actor = None
        else:
            actor = load_actor(session, user.username)
    if expired:
        with db.session(write=True) as session:
            user_queries.delete_web_session(session, token)
    elif actor is not None and now - seen >= LAST_SEEN_RESOLUTION:
        with db.session(write=True) as session:
            user_queries.touch_web_session(session, token, now, now - LAST_SEEN_RESOLUTION)
    return actor


def prune_sessions(db: Database, limits: SessionLimits) -> None:
    """Delete the rows of sessions that can no longer be used (ended or too old)."""
    now = utcnow()
    with db.session(write=True) as session:
        user_queries.delete_web_sessions_before(session, now - timedelta(seconds=limits.max_seconds))


def end_session(db: Database, token: object, *, address: str | None = None) -> None:
    """Sign out: the session's cookie is worthless from now on."""
    if not isinstance(token, str):
        return
    with db.session(write=True) as session:
        web_session = user_queries.web_session(session, token)
        if web_session is None or web_session.ended_at is not None:
            return
        web_session.ended_at = utcnow()
        user = user_queries.user_by_id(session, web_session.user_id)
        name = user.username if user else None
        audit(session, actor=name, action="sign_out", target=name, address=address)


def describe_dead_session(db: Database, token: object) -> tuple[str | None, str]:
    """Whose a session no longer valid was, and why it stopped working."""
    if not isinstance(token, str) or not 0 < len(token) <= 64:
        return None, "not signed in"
    with db.session() as session:
        web_session = user_queries.web_session(session, token)
        if web_session is None:
            return None, "unknown session"
        user = user_queries.user_by_id(session, web_session.user_id)
        if user is None:
            return None, "session of a deleted user"
        if web_session.ended_at is not None:
            why = "session signed out"
        elif SessionLimits().expired(web_session, utcnow()):
            why = "session expired"
        elif not user.active:
            why = "session of a disabled user"
        elif user.session_version != web_session.session_version:
            why = "session ended by a password or role change"
        else:
            why = "session no longer valid"
        return user.username, why
