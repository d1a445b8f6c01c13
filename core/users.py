"""Users, roles and the permission check every mutating operation goes through."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.audit import audit, storable
from core.errors import InvalidInput, NotAllowed
from core.permissions import Permission, Role, parse_role
from core.security import (
    SIGN_IN,
    WRONG_CREDENTIALS,
    LoginLimits,
    SignInThrottled,
    dummy_password_hash,
    throttle_wait,
)
from db.engine import Database
from db.models import AuditLog, RolePermission, User, WebSession, utcnow

ACTION_PHRASES = {
    "prioritize": "prioritize tasks",
    "urgent": "make tasks urgent",
    "critical": "make tasks critical",
    "cancel": "cancel tasks",
    "retry": "retry tasks",
    "user.create": "manage users",
    "user.role": "manage users",
    "user.disable": "manage users",
    "user.enable": "manage users",
    "user.password": "manage users",
    "user.list": "manage users",
    "dispatch": "dispatch tasks",
    "task.view": "view tasks",
    "depths.view": "view queue depths",
}

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@dataclass(frozen=True)
class Actor:
    """The acting user as core sees it: checked against the database, never the browser."""

    username: str
    role: Role
    permissions: frozenset[Permission]

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
        raise InvalidInput(
            "user names are 1-64 characters: letters, digits and . _ @ -, starting with a letter or digit"
        )
    return username


def validate_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"passwords must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise InvalidInput("passwords must be at most 1024 characters")
    return password


def load_actor(session: Session, username: object) -> Actor | None:
    """The active user with this name and their role's permissions, or None."""
    if not isinstance(username, str) or not username or len(username) > 64:
        return None
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        return None
    permissions = session.scalars(select(RolePermission.permission).where(RolePermission.role == user.role)).all()
    return Actor(user.username, Role(user.role), frozenset(Permission(p) for p in permissions))


def authorize(
    db: Database,
    username: object,
    permission: Permission,
    *,
    action: str,
    target: str | None,
    address: str | None = None,
) -> Actor:
    """Return the actor if they hold `permission`; otherwise write a denied audit row and raise.

    The check only reads; a write transaction is opened just to record a denial.
    """
    with db.session() as session:
        actor = load_actor(session, username)
    if actor is not None and actor.can(permission):
        return actor
    if actor is None:
        message = f"not allowed: user {str(username)[:64]!r} does not exist or is disabled"
    else:
        message = f"not allowed: {actor.role.value} {actor.username!r} may not {ACTION_PHRASES.get(action, action)}"
    with db.session(write=True) as session:
        audit(
            session,
            actor=str(username)[:64] if username else None,
            action=action,
            target=target,
            outcome="denied",
            detail=message,
            address=address,
        )
    raise NotAllowed(message)


def add_user(session: Session, username: str, password_hash: str, role: Role) -> User:
    """Insert a user row (names and role already checked); refuses a taken name."""
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise InvalidInput(f"user {username!r} already exists")
    now = utcnow()
    user = User(
        username=username,
        password_hash=password_hash,
        role=role.value,
        active=True,
        session_version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    return user


def create_user(db: Database, username: str, password: str, role: str | Role, *, created_by: str = "system") -> User:
    """Create a user as a trusted caller (command line, first start). The console goes through
    core.user_admin, which checks manage_users first."""
    username = validate_username(username)
    password = validate_password(password)
    role = parse_role(role)
    with db.session(write=True) as session:
        user = add_user(session, username, hash_password(password), role)
        audit(session, actor=created_by, action="user.create", target=username, detail=f"role={role.value}")
    return user


@dataclass(frozen=True)
class SignedIn:
    """A successful sign-in: the session token the browser keeps, and who it is."""

    token: str
    username: str
    role: Role


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
                outcome="denied",
                detail=f"throttled: {throttled}",
                address=address,
            )
        else:
            # Written as a failure now and turned into a success below: attempts in flight count.
            attempt = AuditLog(
                at=now,
                actor=name or None,
                action=SIGN_IN,
                target=name or None,
                outcome="denied",
                detail=WRONG_CREDENTIALS,
                address=address,
            )
            session.add(attempt)
            session.flush()
            attempt_id = attempt.id
            lookup = name and len(username) <= 64
            user = session.scalar(select(User).where(User.username == name)) if lookup else None
            known = (user.id, user.password_hash, user.session_version) if user is not None and user.active else None
    if wait is not None:
        raise throttled
    # The slow hash runs outside any transaction.
    usable = isinstance(password, str) and len(password) <= 1024
    matches = verify_password(known[1] if known else dummy_password_hash(), password if usable else "")
    if not (known and usable and matches):
        raise NotAllowed(WRONG_CREDENTIALS)
    with db.session(write=True) as session:
        user = session.get(User, known[0])
        if user is None or not user.active or user.password_hash != known[1]:
            raise NotAllowed(WRONG_CREDENTIALS)  # disabled or given a new password meanwhile
        now = utcnow()
        session.execute(update(AuditLog).where(AuditLog.id == attempt_id).values(outcome="ok", detail=None))
        user.last_login_at = now
        token = secrets.token_urlsafe(32)
        session.add(
            WebSession(id=token, user_id=user.id, session_version=user.session_version, created_at=now, address=address)
        )
        return SignedIn(token, user.username, Role(user.role))


def session_user(db: Database, token: object) -> Actor | None:
    """The actor behind a browser session, if it is still valid: not signed out, the user
    exists and is active, and neither password nor role changed since the sign-in."""
    if not isinstance(token, str) or not 0 < len(token) <= 64:
        return None
    with db.session() as session:
        web_session = session.get(WebSession, token)
        if web_session is None or web_session.ended_at is not None:
            return None
        user = session.get(User, web_session.user_id)
        if user is None or not user.active or user.session_version != web_session.session_version:
            return None
        return load_actor(session, user.username)


def end_session(db: Database, token: object, *, address: str | None = None) -> None:
    """Sign out: the session's cookie is worthless from now on, wherever it was copied to."""
    if not isinstance(token, str):
        return
    with db.session(write=True) as session:
        web_session = session.get(WebSession, token)
        if web_session is None or web_session.ended_at is not None:
            return
        web_session.ended_at = utcnow()
        user = session.get(User, web_session.user_id)
        name = user.username if user else None
        audit(session, actor=name, action="sign_out", target=name, address=address)


FIRST_ADMIN = "admin"


def ensure_admin(db: Database, password: str | None = None) -> str | None:
    """First start: when no active admin exists, create `admin`. Returns the password when it
    was generated here (to be shown once), else None."""
    with db.session() as session:
        if session.scalar(select(User.id).where(User.role == Role.ADMIN.value, User.active.is_(True)).limit(1)):
            return None
        taken = session.scalar(select(User.id).where(User.username == FIRST_ADMIN)) is not None
    if taken:
        raise InvalidInput(
            f"no active admin, and the name {FIRST_ADMIN!r} is taken: create one with `run.py users create`"
        )
    generated = None if password else secrets.token_urlsafe(12)
    create_user(db, FIRST_ADMIN, password or generated, Role.ADMIN, created_by="first-start")
    return generated
