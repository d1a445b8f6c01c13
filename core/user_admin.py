"""User management for the console (DESIGN section 2: only `manage_users` may do any of it).

Every function takes the acting user name first and checks MANAGE_USERS server-side, whatever
the page showed. Denials are audited by core.users.authorize; refusals (unknown user, bad input,
guard rails) and changes each leave one audit row. Password hashes never leave this module.

Role change, disable and password reset bump users.session_version, which ends every session
the user had (dashboard/auth.py compares it on each request).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Callable, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import DENIED, audit, audit_name, record, run_audited
from core.errors import InvalidInput, NotAllowed, NotFound, WrongState
from core.permissions import Permission, Role, parse_role
from core.users import add_user, authorize, hash_password, load_actor, validate_password, validate_username
from db.engine import Database
from db.models import User, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

MANAGE_PHRASE = "manage users"


@dataclass(frozen=True)
class UserInfo:
    """What the console may know about a user (no password hash)."""

    username: str
    role: str
    active: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None
    session_version: int

    def as_dict(self) -> dict:
        return asdict(self)


def _info(user: User) -> UserInfo:
    return UserInfo(
        user.username,
        user.role,
        bool(user.active),
        user.created_at,
        user.updated_at,
        user.last_login_at,
        user.session_version,
    )


# -- authorization and auditing ------------------------------------------------------------------


def _authorize(db: Database, actor: object, action: str, target: object, address: str | None) -> str:
    """MANAGE_USERS or NotAllowed (the denial is audited by core.users.authorize)."""
    return authorize(
        db, actor, Permission.MANAGE_USERS, action=action, target=audit_name(target) or None, address=address
    ).username


class _NoLongerAllowed(NotAllowed):
    """Refused inside the write transaction, which rolls back: audited afterwards by _audited."""


def _recheck(session: Session, actor: str) -> None:
    """Inside the write transaction: the actor may have been disabled or demoted since authorize."""
    current = load_actor(session, actor)
    if current is None or not current.can(Permission.MANAGE_USERS):
        raise _NoLongerAllowed(f"not allowed: {actor!r} may no longer {MANAGE_PHRASE}")


def _audited(
    db: Database, actor: object, action: str, target: object, address: str | None, operation: Callable[[], T]
) -> T:
    try:
        return run_audited(db, audit_name(actor), action, audit_name(target), address, operation)
    except _NoLongerAllowed as error:
        record(
            db,
            actor=audit_name(actor),
            action=action,
            target=audit_name(target) or None,
            outcome=DENIED,
            detail=str(error),
            address=address,
        )
        raise


def _get_user(session: Session, username: object, *, lock: bool = True) -> User:
    if not isinstance(username, str) or not username:
        raise InvalidInput("choose a user first")
    query = select(User).where(User.username == username[:64])
    if lock:
        query = query.with_for_update()
    user = session.scalar(query)
    if user is None:
        raise NotFound(f"no user named {username[:64]!r}")
    return user


def _other_active_admins(session: Session, username: str) -> int:
    """Active admins other than `username`, locked so two concurrent demotions cannot both pass."""
    rows = session.scalars(
        select(User.id)
        .where(User.role == Role.ADMIN.value, User.active.is_(True), User.username != username)
        .with_for_update()
    ).all()
    return len(rows)


# -- the operations ----------------------------------------------------------------------------


def list_users(db: Database, actor: object, *, address: str | None = None) -> list[UserInfo]:
    """Every user, by name. Reading the list is itself a user-admin action (no audit row on success)."""
    _authorize(db, actor, "user.list", None, address)
    with db.session() as session:
        return [_info(u) for u in session.scalars(select(User).order_by(User.username)).all()]


def create_user(
    db: Database, actor: object, username: object, password: object, role: object, address: str | None = None
) -> UserInfo:
    def operation() -> UserInfo:
        acting = _authorize(db, actor, "user.create", username, address)
        name = validate_username(username.strip() if isinstance(username, str) else username)
        secret = validate_password(password)
        checked_role = parse_role(role)
        password_hash = hash_password(secret)  # slow on purpose: outside the write transaction
        with db.session(write=True) as session:
            _recheck(session, acting)
            user = add_user(session, name, password_hash, checked_role)
            audit(
                session,
                actor=acting,
                action="user.create",
                target=name,
                detail=f"role={checked_role.value}",
                address=address,
            )
            session.flush()
            return _info(user)

    return _audited(db, actor, "user.create", username, address, operation)


def change_role(db: Database, actor: object, username: object, role: object, address: str | None = None) -> UserInfo:
    def operation() -> UserInfo:
        acting = _authorize(db, actor, "user.role", username, address)
        new_role = parse_role(role)
        with db.session(write=True) as session:
            _recheck(session, acting)
            user = _get_user(session, username)
            if user.role == new_role.value:
                raise WrongState(f"{user.username!r} is already {new_role.value}")
            if (
                user.role == Role.ADMIN.value
                and user.active
                and new_role is not Role.ADMIN
                and _other_active_admins(session, user.username) == 0
            ):
                raise WrongState(f"{user.username!r} is the last active admin: make someone else admin first")
            old = user.role
            user.role = new_role.value
            user.session_version += 1
            user.updated_at = utcnow()
            audit(
                session,
                actor=acting,
                action="user.role",
                target=user.username,
                detail=f"{old} -> {new_role.value}",
                address=address,
            )
            return _info(user)

    return _audited(db, actor, "user.role", username, address, operation)


def set_active(db: Database, actor: object, username: object, active: object, address: str | None = None) -> UserInfo:
    action = "user.enable" if active is True else "user.disable"

    def operation() -> UserInfo:
        acting = _authorize(db, actor, action, username, address)
        if not isinstance(active, bool):
            raise InvalidInput("active must be true or false")
        with db.session(write=True) as session:
            _recheck(session, acting)
            user = _get_user(session, username)
            if bool(user.active) == active:
                raise WrongState(f"{user.username!r} is already {'active' if active else 'disabled'}")
            if not active:
                if user.username == acting:
                    raise WrongState("you cannot disable yourself: ask another admin")
                if user.role == Role.ADMIN.value and _other_active_admins(session, user.username) == 0:
                    raise WrongState(f"{user.username!r} is the last active admin and cannot be disabled")
                user.session_version += 1  # ends every session at once
            user.active = active
            user.updated_at = utcnow()
            audit(session, actor=acting, action=action, target=user.username, address=address)
            return _info(user)

    return _audited(db, actor, action, username, address, operation)


def reset_password(
    db: Database, actor: object, username: object, new_password: object, address: str | None = None
) -> UserInfo:
    def operation() -> UserInfo:
        acting = _authorize(db, actor, "user.password", username, address)
        password_hash = hash_password(validate_password(new_password))
        with db.session(write=True) as session:
            _recheck(session, acting)
            user = _get_user(session, username)
            user.password_hash = password_hash
            user.session_version += 1
            user.updated_at = utcnow()
            # Never the password, nor its hash, in the audit row.
            audit(session, actor=acting, action="user.password", target=user.username, address=address)
            return _info(user)

    return _audited(db, actor, "user.password", username, address, operation)
