"""Per-user API tokens: create, list, revoke, and authenticate a request by one.

A token is `swy_` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored, with a
visible prefix (`swy_` + 8 characters) to tell tokens apart in lists and audit rows. The secret
is returned once, by the function that creates it.

Who may do what: every active user manages their own tokens; `manage_users` (admins) manages
anyone's. Every create and revoke is audited, and so is every refusal and every request with a
token that does not work. A token acts as its user with the user's current role: a role change
applies at once, and a disabled user's tokens stop working (enabling the user again revives
the tokens they did not revoke).

`system_*` functions are for trusted callers (the command line), like core.users.create_user.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Callable, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from core.audit import DENIED, audit, audit_name, record, run_audited
from core.errors import InvalidInput, NotAllowed, NotFound, WrongState
from core.permissions import Permission
from core.users import Actor, load_actor
from db.engine import Database
from db.models import ApiToken, User, utcnow

T = TypeVar("T")

TOKEN_PREFIX = "swy_"
TOKEN_BYTES = 32
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
TOKEN_PATTERN = re.compile(r"^swy_[A-Za-z0-9_-]{43}$")
MAX_NAME_LENGTH = 64
MAX_ACTIVE_TOKENS = 50
# last_used_at is written at most this often per token, so reading the API does not turn every
# request into a database write (on SQLite every write takes the database's one write lock).
LAST_USED_RESOLUTION = timedelta(seconds=60)

INVALID_TOKEN = "invalid or revoked API token"
MISSING_TOKEN = "missing API token: send the header 'Authorization: Bearer <token>'"
OTHERS_PHRASE = "manage other users' API tokens"


@dataclass(frozen=True)
class TokenInfo:
    """What anyone may see of a token: never the secret, nor its hash."""

    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("created_at", "last_used_at", "revoked_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["active"] = self.active
        return data


@dataclass(frozen=True)
class NewToken:
    secret: str  # shown once
    info: TokenInfo


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(token: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(
        token.id,
        username,
        token.name,
        token.prefix,
        token.created_at,
        token.created_by,
        token.last_used_at,
        token.revoked_at,
        token.revoked_by,
    )


def check_token_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("a token needs a name (what uses it, e.g. 'nightly-etl')")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"token names are at most {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise InvalidInput("token names are printable text")
    return name


def _user(session: Session, username: object) -> User:
    if not isinstance(username, str) or not username.strip():
        raise InvalidInput("name the user the token is for")
    user = session.scalar(select(User).where(User.username == username.strip()[:64]))
    if user is None:
        raise NotFound(f"no user named {username.strip()[:64]!r}")
    return user


def _find(session: Session, ref: object) -> tuple[ApiToken, str]:
    """A token by its id (a number) or its visible prefix, with its owner's name."""
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if isinstance(ref, int) and not isinstance(ref, bool):
        query = query.where(ApiToken.id == ref)
    elif isinstance(ref, str) and ref.strip().isdigit() and len(ref.strip()) < 10:
        query = query.where(ApiToken.id == int(ref.strip()))
    elif isinstance(ref, str) and ref.strip().startswith(TOKEN_PREFIX) and len(ref.strip()) <= 64:
        query = query.where(ApiToken.prefix == ref.strip()[:PREFIX_LENGTH])
    else:
        raise InvalidInput("name a token by its id or its prefix (swy_...)")
    row = session.execute(query).first()
    if row is None:
        raise NotFound(f"no API token {str(ref)[:64]!r}")
    return row[0], row[1]


# -- authorization -----------------------------------------------------------------------------


def _authorize(db: Database, actor: object, owner: str | None, action: str, target: str | None, address) -> Actor:
    """The acting user, if active and the token's owner or holding manage_users; otherwise a
    denied audit row and NotAllowed."""
    with db.session() as session:
        acting = load_actor(session, actor)
    if acting is not None and (acting.username == owner or acting.can(Permission.MANAGE_USERS)):
        return acting
    if acting is None:
        message = f"not allowed: user {audit_name(actor)!r} does not exist or is disabled"
    else:
        message = f"not allowed: {acting.role.value} {acting.username!r} may not {OTHERS_PHRASE}"
    record(db, actor=audit_name(actor), action=action, target=target, outcome=DENIED, detail=message, address=address)
    raise NotAllowed(message)


def _audited(db: Database, actor: object, action: str, target: object, address, operation: Callable[[], T]) -> T:
    return run_audited(db, audit_name(actor), action, audit_name(target), address, operation)


# -- creating, listing, revoking -----------------------------------------------------------------


def _create(session: Session, owner: str, name: str, created_by: str, address: str | None) -> NewToken:
    user = _user(session, owner)
    if not user.active:
        raise WrongState(f"{user.username!r} is disabled: enable the user before giving them a token")
    active = session.scalar(
        select(func.count()).select_from(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    )
    if active >= MAX_ACTIVE_TOKENS:
        raise WrongState(f"{user.username!r} has {active} active API tokens: revoke one first")
    while True:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        prefix = secret[:PREFIX_LENGTH]
        if session.scalar(select(ApiToken.id).where(ApiToken.prefix == prefix)) is None:
            break
    token = ApiToken(
        user_id=user.id,
        name=name,
        prefix=prefix,
        token_hash=hash_token(secret),
        created_at=utcnow(),
        created_by=created_by,
    )
    session.add(token)
    session.flush()
    audit(
        session,
        actor=created_by,
        action="token.create",
        target=user.username,
        detail=f"{prefix} {name!r}",
        address=address,
    )
    return NewToken(secret, _info(token, user.username))


def _revoke(session: Session, ref: object, revoked_by: str, address: str | None) -> TokenInfo:
    token, owner = _find(session, ref)
    if token.revoked_at is not None:
        raise WrongState(f"API token {token.prefix} ({token.name!r}) is already revoked")
    token.revoked_at = utcnow()
    token.revoked_by = revoked_by
    audit(
        session,
        actor=revoked_by,
        action="token.revoke",
        target=owner,
        detail=f"{token.prefix} {token.name!r}",
        address=address,
    )
    return _info(token, owner)


def _list(session: Session, owner: str | None) -> list[TokenInfo]:
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if owner is not None:
        query = query.where(User.id == _user(session, owner).id)
    rows = session.execute(query.order_by(User.username, ApiToken.created_at.desc(), ApiToken.id.desc())).all()
    return [_info(token, username) for token, username in rows]


def create_token(db: Database, actor: object, owner: object, name: object, *, address: str | None = None) -> NewToken:
    """A new token for `owner`, made by `actor` (the owner, or someone with manage_users)."""

    def operation() -> NewToken:
        owner_name = owner.strip() if isinstance(owner, str) else owner
        acting = _authorize(db, actor, owner_name, "token.create", audit_name(owner_name) or None, address)
        checked = check_token_name(name)
        with db.session(write=True) as session:
            return _create(session, owner_name, checked, acting.username, address)

    return _audited(db, actor, "token.create", owner, address, operation)


def revoke_token(db: Database, actor: object, ref: object, *, address: str | None = None) -> TokenInfo:
    """Revoke a token by id or prefix, as its owner or as someone with manage_users."""

    def operation() -> TokenInfo:
        with db.session() as session:
            _token, owner = _find(session, ref)
        acting = _authorize(db, actor, owner, "token.revoke", owner, address)
        with db.session(write=True) as session:
            return _revoke(session, ref, acting.username, address)

    return _audited(db, actor, "token.revoke", ref, address, operation)


def list_tokens(db: Database, actor: object, owner: object = None, *, address: str | None = None) -> list[TokenInfo]:
    """`owner`'s tokens (default: the actor's own); everyone's with owner="*" and manage_users.
    Reading is not audited unless it is refused."""

    def operation() -> list[TokenInfo]:
        wanted = owner if owner not in (None, "") else audit_name(actor)
        everyone = wanted == "*"
        _authorize(db, actor, None if everyone else audit_name(wanted), "token.list", audit_name(wanted), address)
        with db.session() as session:
            return _list(session, None if everyone else wanted)

    return _audited(db, actor, "token.list", owner, address, operation)


def system_create_token(db: Database, owner: object, name: object, *, created_by: str = "cli") -> NewToken:
    """Create a token as a trusted caller (the command line)."""
    checked = check_token_name(name)
    with db.session(write=True) as session:
        return _create(session, owner, checked, created_by, None)


def system_revoke_token(db: Database, ref: object, *, revoked_by: str = "cli") -> TokenInfo:
    with db.session(write=True) as session:
        return _revoke(session, ref, revoked_by, None)


def system_list_tokens(db: Database, owner: object) -> list[TokenInfo]:
    with db.session() as session:
        return _list(session, owner)


# -- authenticating a request ----------------------------------------------------------------------


def authenticate_token(db: Database, presented: object, *, address: str | None = None) -> Actor:
    """The user behind a presented token, with their current role's permissions.

    Unknown, malformed and revoked tokens and tokens of disabled users all get the same
    NotAllowed(INVALID_TOKEN); the audit row says which it was. No token: NotAllowed(MISSING_TOKEN).
    """
    secret = presented if isinstance(presented, str) else ""
    if not secret:  # no credentials at all is not an attempt: not audited, like anonymous pages
        raise NotAllowed(MISSING_TOKEN)
    problem, owner, prefix = "unknown API token", None, None
    if TOKEN_PATTERN.match(secret):
        prefix = secret[:PREFIX_LENGTH]
        with db.session() as session:
            row = session.execute(
                select(ApiToken.id, ApiToken.revoked_at, ApiToken.last_used_at, User.username, User.active)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == hash_token(secret))
            ).first()
            actor = load_actor(session, row.username) if row is not None else None
        if row is not None:
            owner = row.username
            if row.revoked_at is not None:
                problem = f"revoked API token {prefix}"
            elif not row.active or actor is None:
                problem = f"API token {prefix} of disabled user {row.username!r}"
            else:
                _touch(db, row.id, row.last_used_at)
                return actor
    else:
        problem = "malformed API token"
    record(db, actor=owner, action="api.auth", target=prefix, outcome=DENIED, detail=problem, address=address)
    raise NotAllowed(INVALID_TOKEN)


def _touch(db: Database, token_id: int, last_used_at: datetime | None) -> None:
    now = utcnow()
    if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
        return
    stale = now - LAST_USED_RESOLUTION
    with db.session(write=True) as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < stale))
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
