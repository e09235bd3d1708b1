"""Loading messages as the world sees them (sender and attachments included)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from parley.models import Message
from parley.schemas import MessageOut

_WITH_SENDER_AND_ATTACHMENTS = (joinedload(Message.sender), selectinload(Message.attachments))


def view_of(message: Message) -> MessageOut:
    return MessageOut.of(message, message.sender, list(message.attachments))


def views_of(messages: Iterable[Message]) -> list[MessageOut]:
    return [view_of(m) for m in messages]


async def load_messages(session: AsyncSession, query: object) -> Sequence[Message]:
    """Run a select(Message) with its sender and attachments loaded alongside."""
    result = await session.execute(query.options(*_WITH_SENDER_AND_ATTACHMENTS))  # type: ignore[attr-defined]
    return result.scalars().unique().all()


async def describe_messages(session: AsyncSession, message_ids: Sequence[str]) -> list[MessageOut]:
    if not message_ids:
        return []
    messages = await load_messages(session, select(Message).where(Message.id.in_(message_ids)).order_by(Message.id))
    return views_of(messages)
