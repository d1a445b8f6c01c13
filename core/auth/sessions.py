"""Browser sessions: the cookie names a row, so signing out (or a password or role change, which
bumps the user's session_version) really ends a session, wherever its cookie was copied to."""

from __future__ import annotations

from core.auth.audit import audit
from core.auth.policy import Actor, load_actor
from db.engine import Database
from db.models import utcnow
from db.queries import users as user_queries


def session_user(db: Database, token: object) -> Actor | None:
    """The actor behind a browser session, if it is still valid: not signed out, the user
    exists and is active, and neither password nor role changed since the sign-in."""
    if not isinstance(token, str) or not 0 < len(token) <= 64:
        return None
    with db.session() as session:
        web_session = user_queries.web_session(session, token)
        if web_session is None or web_session.ended_at is not None:
            return None
        user = user_queries.user_by_id(session, web_session.user_id)
        if user is None or not user.active or user.session_version != web_session.session_version:
            return None
        return load_actor(session, user.username)


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
        elif not user.active:
            why = "session of a disabled user"
        elif user.session_version != web_session.session_version:
            why = "session ended by a password or role change"
        else:
            why = "session no longer valid"
        return user.username, why
