"""Blocks: a user stops another from reaching them. The blocked user cannot start a conversation
with the blocker or send to them (403 `blocked`, and nothing more: not when, not why), and their
typing and presence no longer reach the blocker. The blocker's own sends are not affected."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parley.db import reading, transaction
from parley.errors import Forbidden, Invalid
from parley.models import Block, User
from parley.schemas import UserSummary
from parley.services.message_views import user_summaries
from parley.services.users import get_user


def blocked_error() -> Forbidden:
    return Forbidden("you cannot message this user", code="blocked")


def is_blocked_by(session: Session, blocker_id: str, blocked_id: str) -> bool:
    return session.scalar(
        select(Block.blocker_id).where(Block.blocker_id == blocker_id, Block.blocked_id == blocked_id)
    ) is not None


def block_user(session: Session, blocker: User, blocked_id: str) -> None:
    """Block a user; blocking again changes nothing."""
    with transaction(session):
        target = get_user(session, blocked_id)
        if target.id == blocker.id:
            raise Invalid("you cannot block yourself", code="cannot_block_self")
        if is_blocked_by(session, blocker.id, target.id):
            return
        try:
            with session.begin_nested():
                session.add(Block(blocker_id=blocker.id, blocked_id=target.id))
        except IntegrityError:
            pass  # a concurrent block of the same user won: the same outcome


def unblock_user(session: Session, blocker: User, blocked_id: str) -> None:
    """Lift a block; lifting one that does not exist changes nothing."""
    with transaction(session):
        get_user(session, blocked_id)
        session.execute(delete(Block).where(Block.blocker_id == blocker.id, Block.blocked_id == blocked_id))


def list_blocks(session: Session, blocker: User) -> list[UserSummary]:
    with reading(session):
        ids = list(session.scalars(select(Block.blocked_id).where(Block.blocker_id == blocker.id).order_by(Block.created_at, Block.blocked_id)))
        found = user_summaries(session, ids)
    return [found[i] for i in ids if i in found]


def blocked_by(session: Session, user_id: str) -> set[str]:
    """Who `user_id` has blocked (the realtime hub keeps their typing and presence away)."""
    with reading(session):
        return set(session.scalars(select(Block.blocked_id).where(Block.blocker_id == user_id)))
