"""Conversations: one per unordered pair of users, found or created on first contact, listed as
each member's inbox."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, String, func, literal, select, tuple_, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.db import write_transaction
from parley.errors import Invalid, NotFound
from parley.events import ConversationCreated, EventType
from parley.ids import is_valid_id
from parley.models import Conversation, ConversationMember, Message, User, UTCDateTime
from parley.schemas import ConversationMembersOut, ConversationOut, UserSummary
from parley.services.message_views import describe_messages
from parley.services.outbox import record_event
from parley.services.users import get_user, get_user_by_username

INBOX_DEFAULT_LIMIT = 50
INBOX_MAX_LIMIT = 200


@dataclass(frozen=True)
class OtherUser:
    """Who to talk to: by id or by username (exactly one)."""

    user_id: str | None = None
    username: str | None = None


async def get_or_create_conversation(
    session: AsyncSession, actor: User, other: OtherUser
) -> tuple[Conversation, bool]:
    """The conversation between `actor` and `other`, created if it does not exist yet.
    Returns (conversation, created)."""
    async with write_transaction(session):
        return await get_or_create_in_transaction(session, actor, other)


async def get_or_create_in_transaction(
    session: AsyncSession, actor: User, other: OtherUser
) -> tuple[Conversation, bool]:
    try:
        if other.user_id is not None:
            other_user = await get_user(session, other.user_id)
        else:
            other_user = await get_user_by_username(session, other.username or "")
    except NotFound as exc:
        raise NotFound("no such user to talk to", code="user_not_found", details=exc.details) from None
    if other_user.id == actor.id:
        raise Invalid("you cannot start a conversation with yourself", code="cannot_message_self")

    pair_key = Conversation.pair_key_for(actor.id, other_user.id)
    existing = await _find_by_pair(session, pair_key)
    if existing is not None:
        return existing, False

    conversation = Conversation(pair_key=pair_key, initiator_id=actor.id, recipient_id=other_user.id)
    try:
        # A savepoint, so that losing a race to create the same pair leaves our transaction usable.
        async with session.begin_nested():
            session.add(conversation)
            session.add_all(
                [
                    ConversationMember(conversation=conversation, user_id=actor.id),
                    ConversationMember(conversation=conversation, user_id=other_user.id),
                ]
            )
    except IntegrityError:
        winner = await _find_by_pair(session, pair_key)
        if winner is None:  # pragma: no cover - the unique violation proves it exists
            raise
        return winner, False

    record_event(
        session,
        EventType.CONVERSATION_CREATED,
        ConversationCreated(conversation=ConversationMembersOut.of(conversation, actor, other_user)),
        conversation_id=conversation.id,
    )
    return conversation, True


async def _find_by_pair(session: AsyncSession, pair_key: str) -> Conversation | None:
    result = await session.execute(select(Conversation).where(Conversation.pair_key == pair_key))
    return result.scalar_one_or_none()


async def get_member_conversation(session: AsyncSession, conversation_id: str, user_id: str) -> Conversation:
    """The conversation, if `user_id` is one of its two members. Anyone else is told it does not
    exist, so conversation ids reveal nothing."""
    conversation = await session.get(Conversation, conversation_id) if is_valid_id(conversation_id) else None
    if conversation is None or not conversation.has_member(user_id):
        raise NotFound("no such conversation", details={"conversation_id": conversation_id})
    return conversation


async def find_conversation_with(session: AsyncSession, viewer: User, other_user_id: str) -> ConversationOut:
    async with session.begin():
        conversation = (
            await _find_by_pair(session, Conversation.pair_key_for(viewer.id, other_user_id))
            if is_valid_id(other_user_id)
            else None
        )
        if conversation is None:
            raise NotFound("no conversation with this user yet", details={"user_id": other_user_id})
        return (await describe_conversations(session, viewer.id, [conversation]))[0]


async def show_conversation(session: AsyncSession, viewer: User, conversation_id: str) -> ConversationOut:
    async with session.begin():
        conversation = await get_member_conversation(session, conversation_id, viewer.id)
        return (await describe_conversations(session, viewer.id, [conversation]))[0]


@dataclass(frozen=True)
class InboxPage:
    items: list[ConversationOut]
    next_cursor: str | None


async def list_inbox(
    session: AsyncSession, viewer: User, *, cursor: str | None = None, limit: int = INBOX_DEFAULT_LIMIT
) -> InboxPage:
    """The viewer's conversations, most recent activity first, `limit` at a time."""
    position = decode_inbox_cursor(cursor) if cursor else None
    async with session.begin():
        # Each member side is read newest-first straight off its own index and the two short lists
        # merged, so a page costs the same for a user with ten conversations or ten thousand.
        sides = [
            _inbox_side(Conversation.initiator_id, viewer.id, position, limit + 1).subquery(),
            _inbox_side(Conversation.recipient_id, viewer.id, position, limit + 1).subquery(),
        ]
        merged = union_all(*(select(side.c.id) for side in sides)).subquery()
        rows = (
            await session.execute(
                select(Conversation)
                .join(merged, merged.c.id == Conversation.id)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
                .limit(limit + 1)
            )
        ).scalars().all()
        page, more = rows[:limit], len(rows) > limit
        items = await describe_conversations(session, viewer.id, page)
    next_cursor = encode_inbox_cursor(page[-1].updated_at, page[-1].id) if more and page else None
    return InboxPage(items=items, next_cursor=next_cursor)


def _inbox_side(
    member_column: object, user_id: str, position: tuple[datetime, str] | None, limit: int
) -> Select[tuple[str]]:
    query = select(Conversation.id).where(member_column == user_id)  # type: ignore[operator]
    if position is not None:
        query = query.where(
            tuple_(Conversation.updated_at, Conversation.id)
            < tuple_(literal(position[0], UTCDateTime()), literal(position[1], String()))
        )
    return query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit)


def encode_inbox_cursor(updated_at: datetime, conversation_id: str) -> str:
    raw = f"{updated_at.isoformat()}|{conversation_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_inbox_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, conversation_id = raw.split("|")
        updated_at = datetime.fromisoformat(stamp)
        if updated_at.tzinfo is None or not is_valid_id(conversation_id):
            raise ValueError(raw)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Invalid("cursor is not one this server gave out", code="invalid_cursor") from None
    return updated_at, conversation_id


async def describe_conversations(
    session: AsyncSession, viewer_id: str, conversations: Sequence[Conversation]
) -> list[ConversationOut]:
    """Conversations as `viewer_id` sees them: the other member, the last message and how many
    messages the viewer has not read. A fixed number of queries, whatever the page size."""
    if not conversations:
        return []
    ids = [c.id for c in conversations]
    other_ids = {c.other_member_id(viewer_id) for c in conversations}
    others = {u.id: u for u in (await session.execute(select(User).where(User.id.in_(other_ids)))).scalars()}

    latest_id = (
        select(Message.id)
        .where(Message.conversation_id == Conversation.id)
        .order_by(Message.id.desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )
    last_ids = [
        message_id
        for message_id in (await session.execute(select(latest_id).where(Conversation.id.in_(ids)))).scalars()
        if message_id is not None
    ]
    last_messages = {m.conversation_id: m for m in await describe_messages(session, last_ids)}

    unread_rows = await session.execute(
        select(Message.conversation_id, func.count())
        .where(
            Message.conversation_id.in_(ids),
            Message.sender_id != viewer_id,
            Message.read_at.is_(None),
            Message.deleted_at.is_(None),
        )
        .group_by(Message.conversation_id)
    )
    unread: dict[str, int] = {conversation_id: count for conversation_id, count in unread_rows}
    return [
        ConversationOut(
            id=c.id,
            initiator_id=c.initiator_id,
            recipient_id=c.recipient_id,
            created_at=c.created_at,
            updated_at=c.updated_at,
            other_user=UserSummary.model_validate(others[c.other_member_id(viewer_id)]),
            last_message=last_messages.get(c.id),
            unread_count=unread.get(c.id, 0),
        )
        for c in conversations
    ]

