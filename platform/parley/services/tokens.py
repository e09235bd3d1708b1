"""API tokens: minted for a user, stored only as a hash, shown once, revocable."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import String, bindparam, select, update
from sqlalchemy.orm import Session

from parley.db import reading, transaction
from parley.errors import NotFound
from parley.ids import is_valid_id
from parley.models import ApiToken, User, utcnow
from parley.services.users import get_user

TOKEN_PREFIX = "plt_"
# last_used_at is a hint for humans; refreshing it at most this often keeps reads from writing.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class MintedToken:
    token: ApiToken
    secret: str  # the only time the clear token exists outside its holder


def create_token(session: Session, user_id: str, name: str | None = None) -> MintedToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(session):
        get_user(session, user_id)
        token = ApiToken(user_id=user_id, token_hash=hash_token(secret), name=name)
        session.add(token)
    return MintedToken(token=token, secret=secret)


def revoke_token(session: Session, token_id: str, *, actor_id: str | None) -> str:
    """Revoke a token; returns its user's id (whose cached credentials must go). `actor_id` None
    means the admin; a user may revoke only their own tokens (anyone else's is reported as not
    found, so token ids reveal nothing). Revoking twice is harmless."""
    with transaction(session):
        token = session.get(ApiToken, token_id) if is_valid_id(token_id) else None
        if token is None or (actor_id is not None and token.user_id != actor_id):
            raise NotFound("no such token", details={"token_id": token_id})
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        return token.user_id


def authenticate(session: Session, secret: str) -> User | None:
    """The user a bearer token belongs to, or None for an unknown or revoked token. Runs on every
    request (the API caches its answer briefly), so it reads plain columns in one indexed lookup
    rather than loading ORM objects."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    with reading(session):
        row = (session.execute(_TOKEN_HOLDER, {"token_hash": hash_token(secret)})).first()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        with transaction(session):
            session.execute(update(ApiToken).where(ApiToken.id == row.token_id).values(last_used_at=now))
    return User(**{column.key: row._mapping[column.key] for column in _USER_COLUMNS})


_USER_COLUMNS = tuple(getattr(User, column.key) for column in User.__table__.columns)
# Built once: this runs on every request.
_TOKEN_HOLDER = (
    select(ApiToken.id.label("token_id"), ApiToken.last_used_at, *_USER_COLUMNS)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash", type_=String()), ApiToken.revoked_at.is_(None))
)
