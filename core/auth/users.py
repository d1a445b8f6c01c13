"""Users as a trusted caller makes them: the command line and the first start. The console goes
through core.auth.user_admin, which checks manage_users first."""

from __future__ import annotations

import re
import secrets

from core.auth.audit import audit
from core.auth.passwords import hash_password, validate_password
from core.auth.permissions import Role, parse_role
from core.errors import InvalidInput
from db.engine import Database, Transaction
from db.models import User, utcnow
from db.queries import users as user_queries

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
FIRST_ADMIN = "admin"


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
        raise InvalidInput(
            "user names are 1-64 characters: letters, digits and . _ @ -, starting with a letter or digit"
        )
    return username


def add_user(session: Transaction, username: str, password_hash: str, role: Role) -> User:
    """Insert a user row (names and role already checked); refuses a taken name."""
    if user_queries.user_named(session, username) is not None:
        raise InvalidInput(f"user {username!r} already exists")
    now = utcnow()
    return user_queries.add_user(
        session,
        username=username,
        password_hash=password_hash,
        role=role.value,
        active=True,
        session_version=1,
        created_at=now,
        updated_at=now,
    )


def create_user(db: Database, username: str, password: str, role: str | Role, *, created_by: str = "system") -> User:
    """Create a user as a trusted caller (command line, first start)."""
    username = validate_username(username)
    password = validate_password(password)
    checked_role = parse_role(role)
    with db.session(write=True) as session:
        user = add_user(session, username, hash_password(password), checked_role)
        audit(session, actor=created_by, action="user.create", target=username, detail=f"role={checked_role.value}")
    return user


def ensure_admin(db: Database, password: str | None = None) -> str | None:
    """First start: when no active admin exists, create `admin`. Returns the password when it
    was generated here (to be shown once), else None."""
    with db.session() as session:
        if user_queries.active_admin_exists(session, Role.ADMIN.value):
            return None
        taken = user_queries.user_named(session, FIRST_ADMIN) is not None
    if taken:
        raise InvalidInput(
            f"no active admin, and the name {FIRST_ADMIN!r} is taken: create one with `run.py users create`"
        )
    generated = None if password else secrets.token_urlsafe(12)
    create_user(db, FIRST_ADMIN, password or generated or "", Role.ADMIN, created_by="first-start")
    return generated
