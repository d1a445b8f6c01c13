"""API tokens: stored by the SHA-256 of their secret, named by a visible prefix."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.models import ApiToken, User


def _with_owner():
    return select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)


def token_by_id(session: Session, token_id: int) -> tuple[ApiToken, str] | None:
    row = session.execute(_with_owner().where(ApiToken.id == token_id)).first()
    return (row[0], row[1]) if row else None


def token_by_prefix(session: Session, prefix: str) -> tuple[ApiToken, str] | None:
    row = session.execute(_with_owner().where(ApiToken.prefix == prefix)).first()
    return (row[0], row[1]) if row else None


def prefix_taken(session: Session, prefix: str) -> bool:
    return session.scalar(select(ApiToken.id).where(ApiToken.prefix == prefix)) is not None


def active_count(session: Session, user_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        )
        or 0
    )


def add_token(session: Session, **values: Any) -> ApiToken:
    token = ApiToken(**values)
    session.add(token)
    session.flush()
    return token


def tokens_of(session: Session, user_id: int | None) -> list[tuple[ApiToken, str]]:
    """Every token (user_id None) or one user's, by owner, newest first."""
    query = _with_owner()
    if user_id is not None:
        query = query.where(User.id == user_id)
    rows = session.execute(query.order_by(User.username, ApiToken.created_at.desc(), ApiToken.id.desc())).all()
    return [(token, username) for token, username in rows]


def token_by_hash(session: Session, token_hash: str) -> Any:
    """(id, revoked_at, last_used_at, username, active) of the token with this hash, or None."""
    return session.execute(
        select(ApiToken.id, ApiToken.revoked_at, ApiToken.last_used_at, User.username, User.active)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash)
    ).first()


def touch(session: Session, token_id: int, now: datetime, stale: datetime) -> None:
    """Set last_used_at unless another request did since `stale`."""
    session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < stale))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
