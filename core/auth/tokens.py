"""Per-user API tokens: create, list, revoke, and authenticate a request by one.

A token is `swy_` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored, with a
visible prefix (`swy_` + 8 characters) to tell tokens apart in lists and audit rows. The secret
is returned once, by the function that creates it.

Who may do what: every active user manages their own tokens; `manage_users` (admins) manages
anyone's. Every create and revoke is audited, and so is every refusal and every request with a
token that does not work. A token acts as its user with the user's current role: a role change
applies at once, and a disabled user's tokens stop working (enabling the user again revives
the tokens they did not revoke).

`system_*` functions are for trusted callers (the command line), like core.auth.users.create_user.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from core.auth.audit import audit, audit_name, record_repeated, run_audited
from core.auth.permissions import Permission
from core.auth.policy import Acting, Actor, authorize, load_actor
from core.errors import InvalidInput, NotAllowed, NotFound, WrongState
from db.engine import Database, Transaction
from db.models import ApiToken, User, utcnow
from db.queries import tokens as token_queries
from db.queries import users as user_queries

TOKEN_PREFIX = "swy_"
TOKEN_BYTES = 32
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
TOKEN_PATTERN = re.compile(r"^swy_[A-Za-z0-9_-]{43}$")
TOKEN_ID = re.compile(r"^[0-9]{1,9}$")  # ASCII digits: "²".isdigit() is True, and int("²") fails
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


def _user(session: Transaction, username: object) -> User:
    if not isinstance(username, str) or not username.strip():
        raise InvalidInput("name the user the token is for")
    user = user_queries.user_named(session, username.strip()[:64])
    if user is None:
        raise NotFound(f"no user named {username.strip()[:64]!r}")
    return user


def _find(session: Transaction, ref: object) -> tuple[ApiToken, str]:
    """A token by its id (a number) or its visible prefix, with its owner's name."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        row = token_queries.token_by_id(session, ref)
    elif isinstance(ref, str) and TOKEN_ID.match(ref.strip()):
        row = token_queries.token_by_id(session, int(ref.strip()))
    elif isinstance(ref, str) and ref.strip().startswith(TOKEN_PREFIX) and len(ref.strip()) <= 64:
        row = token_queries.token_by_prefix(session, ref.strip()[:PREFIX_LENGTH])
    else:
        raise InvalidInput("name a token by its id or its prefix (swy_...)")
    if row is None:
        raise NotFound(f"no API token {str(ref)[:64]!r}")
    return row


# -- authorization -----------------------------------------------------------------------------


def _authorize(db: Database, actor: object, owner: object, action: str, target: str | None, address) -> Acting:
    """The acting user, if active and the token's owner or holding manage_users."""
    return authorize(
        db, actor, Permission.MANAGE_USERS, action=action, target=target, address=address, doing=OTHERS_PHRASE,
        owner=owner if isinstance(owner, str) else None,
    )  # fmt: skip


# -- creating, listing, revoking -----------------------------------------------------------------


def _create(session: Transaction, owner: object, name: str, created_by: str, address: str | None) -> NewToken:
    user = _user(session, owner)
    if not user.active:
        raise WrongState(f"{user.username!r} is disabled: enable the user before giving them a token")
    active = token_queries.active_count(session, user.id)
    if active >= MAX_ACTIVE_TOKENS:
        raise WrongState(f"{user.username!r} has {active} active API tokens: revoke one first")
    while True:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        prefix = secret[:PREFIX_LENGTH]
        if not token_queries.prefix_taken(session, prefix):
            break
    token = token_queries.add_token(
        session,
        user_id=user.id,
        name=name,
        prefix=prefix,
        token_hash=hash_token(secret),
        created_at=utcnow(),
        created_by=created_by,
    )
    audit(
        session,
        actor=created_by,
        action="token.create",
        target=user.username,
        detail=f"{prefix} {name!r}",
        address=address,
    )
    return NewToken(secret, _info(token, user.username))


def _revoke(session: Transaction, ref: object, revoked_by: str, address: str | None) -> TokenInfo:
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


def _list(session: Transaction, owner: object) -> list[TokenInfo]:
    user_id = None if owner is None else _user(session, owner).id
    return [_info(token, username) for token, username in token_queries.tokens_of(session, user_id)]


def create_token(db: Database, actor: object, owner: object, name: object, *, address: str | None = None) -> NewToken:
    """A new token for `owner`, made by `actor` (the owner, or someone with manage_users)."""

    def operation() -> NewToken:
        owner_name = owner.strip() if isinstance(owner, str) else owner
        acting = _authorize(db, actor, owner_name, "token.create", audit_name(owner_name) or None, address)
        checked = check_token_name(name)
        with db.session(write=True) as session:
            return _create(session, owner_name, checked, acting.username, address)

    return run_audited(db, actor, "token.create", owner, address, operation)


def revoke_token(db: Database, actor: object, ref: object, *, address: str | None = None) -> TokenInfo:
    """Revoke a token by id or prefix, as its owner or as someone with manage_users."""

    def operation() -> TokenInfo:
        with db.session() as session:
            _token, owner = _find(session, ref)
        acting = _authorize(db, actor, owner, "token.revoke", owner, address)
        with db.session(write=True) as session:
            return _revoke(session, ref, acting.username, address)

    return run_audited(db, actor, "token.revoke", ref, address, operation)


def list_tokens(db: Database, actor: object, owner: object = None, *, address: str | None = None) -> list[TokenInfo]:
    """`owner`'s tokens (default: the actor's own); everyone's with owner="*" and manage_users.
    Reading is not audited unless it is refused."""

    def operation() -> list[TokenInfo]:
        wanted = owner if owner not in (None, "") else audit_name(actor)
        everyone = wanted == "*"
        _authorize(db, actor, None if everyone else audit_name(wanted), "token.list", audit_name(wanted), address)
        with db.session() as session:
            return _list(session, None if everyone else wanted)

    return run_audited(db, actor, "token.list", owner, address, operation)


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
            row = token_queries.token_by_hash(session, hash_token(secret))
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
    # An unknown token's prefix names nothing: left out, so a flood of random tokens is one row.
    target = prefix if owner else None
    record_repeated(db, actor=owner, action="api.auth", target=target, detail=problem, address=address)
    raise NotAllowed(INVALID_TOKEN)


def _touch(db: Database, token_id: int, last_used_at: datetime | None) -> None:
    now = utcnow()
    if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
        return
    stale = now - LAST_USED_RESOLUTION
    with db.session(write=True) as session:
        token_queries.touch(session, token_id, now, stale)
