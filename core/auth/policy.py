"""Who is acting, and the one permission check every entry point goes through.

The console, the HTTP API and the command line all call `authorize` with the acting user's
name (or the Actor already loaded for this request); it reads the user and their role's
permissions from the database, never from the browser. A denial is one `denied` audit row and
NotAllowed with one message format: "not allowed: <role> '<name>' may not <phrase>".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.auth.audit import DENIED, Denied, audit_name, record
from core.auth.permissions import PHRASES, Permission, Role
from core.errors import NotAllowed
from db.engine import Database, Transaction
from db.queries import users as user_queries


@dataclass(frozen=True)
class Actor:
    """The acting user as core sees it: checked against the database, never the browser."""

    username: str
    role: Role
    permissions: frozenset[Permission]
    time_zone: str = "UTC"  # how the console shows this user times

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


@runtime_checkable
class Acting(Protocol):
    """A user whose permissions were loaded from the database for this request: an Actor, or
    the console's signed-in user."""

    @property
    def username(self) -> str: ...

    @property
    def role(self) -> Role: ...

    def can(self, permission: Permission) -> bool: ...


def load_actor(session: Transaction, username: object) -> Actor | None:
    """The active user with this name and their role's permissions, or None."""
    if not isinstance(username, str) or not username or len(username) > 64:
        return None
    user = user_queries.user_named(session, username)
    if user is None or not user.active:
        return None
    permissions = user_queries.permissions_of(session, user.role)
    return Actor(user.username, Role(user.role), frozenset(Permission(p) for p in permissions), user.time_zone)


def authorize(
    db: Database,
    actor: Acting | object,
    permission: Permission | None,
    *,
    action: str,
    target: object = None,
    address: str | None = None,
    doing: str | None = None,
    owner: str | None = None,
    session: Transaction | None = None,
) -> Acting:
    """The acting user, if they exist, are active and hold `permission`.

    - `actor`: a user name (loaded here) or the user loaded from the database for this request.
    - `permission` None: any active user may (their own things); `owner`: the user whose things
      are acted on, who needs no permission for them.
    - `doing`: the words for an operation narrower than its permission ("retry tasks").
    - `session`: check again inside a write transaction (the actor may have been disabled or
      demoted since); a denial there is raised as Denied and recorded by run_audited after the
      rollback. Otherwise the denial is recorded here.
    """
    checked: Acting | None
    if isinstance(actor, Acting) and session is None:
        checked = actor
    elif session is not None:
        checked = load_actor(session, actor.username if isinstance(actor, Acting) else actor)
    else:
        with db.session() as reading:
            checked = load_actor(reading, actor)
    if checked is not None and (
        permission is None or checked.can(permission) or (owner is not None and checked.username == owner)
    ):
        return checked
    name = actor.username if isinstance(actor, Acting) else audit_name(actor)
    phrase = doing or PHRASES[permission or Permission.VIEW_DASHBOARD]
    if session is not None:
        raise Denied(f"not allowed: {name!r} may no longer {phrase}")
    if checked is None:
        message = f"not allowed: user {name!r} does not exist or is disabled"
    else:
        message = f"not allowed: {checked.role.value} {checked.username!r} may not {phrase}"
    record(db, actor=name, action=action, target=target, outcome=DENIED, detail=message, address=address)
    raise NotAllowed(message)
