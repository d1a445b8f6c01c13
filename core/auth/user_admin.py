"""User management for the console: only `manage_users` may do any of it.

Every function takes the acting user name first and checks MANAGE_USERS server-side, whatever
the page showed, and again inside its write transaction. Denials, refusals (unknown user, bad
input, guard rails) and changes each leave one audit row. Password hashes never leave this
module.

Role change, disable and password reset bump users.session_version, which ends every session
the user had (dashboard/auth.py compares it on each request).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from core.auth.audit import audit, audit_name, run_audited
from core.auth.passwords import hash_password, validate_password
from core.auth.permissions import Permission, Role, parse_role
from core.auth.policy import authorize
from core.auth.users import add_user, validate_username
from core.errors import InvalidInput, NotFound, WrongState
from db.engine import Database, Transaction
from db.models import User, utcnow
from db.queries import users as user_queries


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


# -- authorization -----------------------------------------------------------------------------


def _authorize(db: Database, actor: object, action: str, target: object, address: str | None) -> str:
    """MANAGE_USERS or NotAllowed (the denial is audited by authorize)."""
    return authorize(
        db, actor, Permission.MANAGE_USERS, action=action, target=audit_name(target) or None, address=address
    ).username


def _recheck(db: Database, session: Transaction, actor: str, action: str) -> None:
    """Inside the write transaction: the actor may have been disabled or demoted since."""
    authorize(db, actor, Permission.MANAGE_USERS, action=action, session=session)


def _other_admins(session: Transaction, user: User) -> int:
    """Active admins other than `user`, locked so two concurrent demotions cannot both pass."""
    return user_queries.other_active_admins(session, Role.ADMIN.value, user.username)


def _get_user(session: Transaction, username: object) -> User:
    if not isinstance(username, str) or not username:
        raise InvalidInput("choose a user first")
    user = user_queries.user_named(session, username[:64], lock=True)
    if user is None:
        raise NotFound(f"no user named {username[:64]!r}")
    return user


# -- the operations ----------------------------------------------------------------------------


def list_users(db: Database, actor: object, *, address: str | None = None) -> list[UserInfo]:
    """Every user, by name. Reading the list is itself a user-admin action (no audit row on success)."""
    _authorize(db, actor, "user.list", None, address)
    with db.session() as session:
        return [_info(u) for u in user_queries.all_users(session)]


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
            _recheck(db, session, acting, "user.create")
            user = add_user(session, name, password_hash, checked_role)
            audit(
                session,
                actor=acting,
                action="user.create",
                target=name,
                detail=f"role={checked_role.value}",
                address=address,
            )
            return _info(user)

    return run_audited(db, actor, "user.create", username, address, operation)


def change_role(db: Database, actor: object, username: object, role: object, address: str | None = None) -> UserInfo:
    def operation() -> UserInfo:
        acting = _authorize(db, actor, "user.role", username, address)
        new_role = parse_role(role)
        with db.session(write=True) as session:
            _recheck(db, session, acting, "user.role")
            user = _get_user(session, username)
            if user.role == new_role.value:
                raise WrongState(f"{user.username!r} is already {new_role.value}")
            if (
                user.role == Role.ADMIN.value
                and user.active
                and new_role is not Role.ADMIN
                and _other_admins(session, user) == 0
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

    return run_audited(db, actor, "user.role", username, address, operation)


def set_active(db: Database, actor: object, username: object, active: object, address: str | None = None) -> UserInfo:
    action = "user.enable" if active is True else "user.disable"

    def operation() -> UserInfo:
        acting = _authorize(db, actor, action, username, address)
        if not isinstance(active, bool):
            raise InvalidInput("active must be true or false")
        with db.session(write=True) as session:
            _recheck(db, session, acting, action)
            user = _get_user(session, username)
            if bool(user.active) == active:
                raise WrongState(f"{user.username!r} is already {'active' if active else 'disabled'}")
            if not active:
                if user.username == acting:
                    raise WrongState("you cannot disable yourself: ask another admin")
                if user.role == Role.ADMIN.value and _other_admins(session, user) == 0:
                    raise WrongState(f"{user.username!r} is the last active admin and cannot be disabled")
                user.session_version += 1  # ends every session at once
            user.active = active
            user.updated_at = utcnow()
            audit(session, actor=acting, action=action, target=user.username, address=address)
            return _info(user)

    return run_audited(db, actor, action, username, address, operation)


def reset_password(
    db: Database, actor: object, username: object, new_password: object, address: str | None = None
) -> UserInfo:
    def operation() -> UserInfo:
        acting = _authorize(db, actor, "user.password", username, address)
        password_hash = hash_password(validate_password(new_password))
        with db.session(write=True) as session:
            _recheck(db, session, acting, "user.password")
            user = _get_user(session, username)
            user.password_hash = password_hash
            user.session_version += 1
            user.updated_at = utcnow()
            # Never the password, nor its hash, in the audit row.
            audit(session, actor=acting, action="user.password", target=user.username, address=address)
            return _info(user)

    return run_audited(db, actor, "user.password", username, address, operation)
