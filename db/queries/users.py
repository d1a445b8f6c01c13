"""Users, their roles' permissions, and browser sessions."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from db.engine import rows_changed
from db.models import RolePermission, User, WebSession, utcnow


def user_named(session: Session, username: str, *, lock: bool = False) -> User | None:
    query = select(User).where(User.username == username)
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def all_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)).all())


def add_user(session: Session, **values) -> User:
    user = User(**values)
    session.add(user)
    session.flush()  # a name taken meanwhile fails here, inside the caller's transaction
    return user


def active_admin_exists(session: Session, admin_role: str) -> bool:
    return session.scalar(select(User.id).where(User.role == admin_role, User.active.is_(True)).limit(1)) is not None


def other_active_admins(session: Session, admin_role: str, username: str) -> int:
    """Active admins other than `username`, locked so two concurrent demotions cannot both pass."""
    rows = session.scalars(
        select(User.id)
        .where(User.role == admin_role, User.active.is_(True), User.username != username)
        .with_for_update()
    ).all()
    return len(rows)


# -- role permissions ----------------------------------------------------------------------------


def permissions_of(session: Session, role: str) -> list[str]:
    return list(session.scalars(select(RolePermission.permission).where(RolePermission.role == role)).all())


def role_permission_pairs(session: Session) -> set[tuple[str, str]]:
    return {(r, p) for r, p in session.execute(select(RolePermission.role, RolePermission.permission))}


def replace_role_permissions(session: Session, wanted: set[tuple[str, str]]) -> None:
    """Make role_permissions hold exactly `wanted`: (role, permission) pairs."""
    have = role_permission_pairs(session)
    for role, permission in have - wanted:
        session.execute(
            delete(RolePermission).where(RolePermission.role == role, RolePermission.permission == permission)
        )
    session.add_all(RolePermission(role=r, permission=p) for r, p in sorted(wanted - have))


# -- browser sessions ----------------------------------------------------------------------------


def add_web_session(
    session: Session, token: str, user_id: int, session_version: int, created_at: datetime, address: str | None
) -> None:
    session.add(
        WebSession(id=token, user_id=user_id, session_version=session_version, created_at=created_at, address=address)
    )


def web_session(session: Session, token: str) -> WebSession | None:
    return session.get(WebSession, token)


def touch_web_session(session: Session, token: str, now: datetime, stale: datetime) -> None:
    """last_seen_at = now, unless another request of the session wrote it since `stale`."""
    session.execute(
        update(WebSession)
        .where(
            WebSession.id == token,
            or_(WebSession.last_seen_at.is_(None), WebSession.last_seen_at < stale),
        )
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )


def keep_web_session(session: Session, token: str, session_version: int) -> None:
    """Carry one session over a session_version bump (the one that changed its own password)."""
    session.execute(
        update(WebSession)
        .where(WebSession.id == token)
        .values(session_version=session_version)
        .execution_options(synchronize_session=False)
    )


def live_web_sessions(session: Session, user_id: int, session_version: int) -> list[WebSession]:
    return list(
        session.scalars(
            select(WebSession)
            .where(
                WebSession.user_id == user_id,
                WebSession.ended_at.is_(None),
                WebSession.session_version == session_version,
            )
            .order_by(WebSession.created_at.desc())
        ).all()
    )


def end_web_sessions(session: Session, user_id: int, session_version: int, *, except_token: str | None) -> int:
    """End a user's working sessions but one; how many ended. (A session of an older
    session_version already stopped working: it is not counted again.)"""
    condition = [
        WebSession.user_id == user_id,
        WebSession.ended_at.is_(None),
        WebSession.session_version == session_version,
    ]
    if except_token is not None:
        condition.append(WebSession.id != except_token)
    result = session.execute(
        update(WebSession).where(*condition).values(ended_at=utcnow()).execution_options(synchronize_session=False)
    )
    return rows_changed(result)


def session_key(token: str) -> str:
    """A handle for a session that is not its token (shown in the console)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def delete_web_session(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == token))


def delete_web_sessions_before(session: Session, created_before: datetime) -> None:
    """Sessions signed in before `created_before`, and sessions that ended before it."""
    session.execute(
        delete(WebSession).where(or_(WebSession.created_at < created_before, WebSession.ended_at < created_before))
    )
