"""Users and their notification settings."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parley.db import transaction
from parley.errors import Conflict, NotFound
from parley.ids import is_valid_id
from parley.models import EmailDigest, User, UserKind, Weekday

# ASCII letters, digits and . _ - (not at the ends): safe in URLs and mentions, and folded to lower
# case identically by every database, which the case-insensitive unique index relies on.
USERNAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,38}[A-Za-z0-9])?$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)


def is_valid_username(username: str) -> bool:
    return bool(_USERNAME_RE.match(username))


@dataclass(frozen=True)
class NewUser:
    username: str
    name: str
    email: str | None = None
    avatar_url: str | None = None
    kind: UserKind = UserKind.USER


def create_user(session: Session, new_user: NewUser) -> User:
    taken = Conflict(f"username {new_user.username!r} is taken", code="username_taken")
    with transaction(session):
        if _find_by_username(session, new_user.username) is not None:
            raise taken
        user = User(
            username=new_user.username,
            name=new_user.name,
            email=new_user.email,
            avatar_url=new_user.avatar_url,
            kind=new_user.kind,
        )
        session.add(user)
        try:
            session.flush()
        except IntegrityError:
            raise taken from None
    return user


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id) if is_valid_id(user_id) else None
    if user is None:
        raise NotFound("no such user", details={"user_id": user_id})
    return user


def get_user_by_username(session: Session, username: str) -> User:
    user = _find_by_username(session, username) if is_valid_username(username) else None
    if user is None:
        raise NotFound("no such user", details={"username": username})
    return user


def _find_by_username(session: Session, username: str) -> User | None:
    result = session.execute(select(User).where(func.lower(User.username) == username.lower()))
    return result.scalar_one_or_none()


@dataclass(frozen=True)
class NotificationSettingsChange:
    inbox_notifications: bool | None = None
    order_updates_notifications: bool | None = None
    email_digest: EmailDigest | None = None
    timezone: str | None = None
    digest_hour: int | None = None
    digest_weekday: Weekday | None = None


DIGEST_SETTINGS = ("email_digest", "timezone", "digest_hour", "digest_weekday")


def update_notification_settings(
    session: Session, user_id: str, change: NotificationSettingsChange
) -> User:
    with transaction(session):
        user = get_user(session, user_id)
        if change.inbox_notifications is not None:
            user.inbox_notifications = change.inbox_notifications
        if change.order_updates_notifications is not None:
            user.order_updates_notifications = change.order_updates_notifications
        digest_changed = False
        for name in DIGEST_SETTINGS:
            value = getattr(change, name)
            if value is not None and value != getattr(user, name):
                setattr(user, name, value)
                digest_changed = True
        if digest_changed:
            # Only then: rescheduling an unchanged user would skip a digest due but not yet swept.
            from parley.services.email_digests import reschedule

            reschedule(user)
    return user
