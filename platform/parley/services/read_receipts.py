"""Read receipts: a member marks a conversation read, up to a message or to its end."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from parley.db import transaction
from parley.events import EventType, MessageRead
from parley.ids import is_valid_id
from parley.models import ConversationMember, Message, User, utcnow
from parley.services.conversations import get_member_conversation
from parley.services.message_views import unread_by
from parley.services.messages import field_error
from parley.services.outbox import record_event


@dataclass(frozen=True)
class ReadState:
    receipt: MessageRead
    unread_count: int  # what the reader still has not read in the conversation afterwards


def mark_read(
    session: Session, reader: User, conversation_id: str, up_to_message_id: str | None = None
) -> ReadState:
    """Set read_at on the other member's unread messages up to `up_to_message_id` (default: the
    newest) and move the reader's read marker there. `count` says how many became read; an event
    is recorded only when some did."""
    if up_to_message_id is not None and not is_valid_id(up_to_message_id):
        raise field_error("message_id", "must be a message id")
    with transaction(session):
        membership = get_member_conversation(session, conversation_id, reader.id)
        if up_to_message_id is None:
            up_to_message_id = session.scalar(
                select(func.max(Message.id)).where(Message.conversation_id == conversation_id)
            )
        elif session.scalar(
            select(Message.id).where(Message.id == up_to_message_id, Message.conversation_id == conversation_id)
        ) is None:
            raise field_error("message_id", "is not a message of this conversation")
        now = utcnow()
        if up_to_message_id is None:  # an empty conversation: nothing to read
            receipt = MessageRead(
                conversation_id=conversation_id, reader_id=reader.id, up_to_message_id=None, read_at=now, count=0
            )
            return ReadState(receipt, unread_count=0)
        result = session.execute(
            update(Message)
            .where(
                Message.conversation_id == conversation_id,
                Message.sender_id != reader.id,
                Message.read_at.is_(None),
                Message.id <= up_to_message_id,
            )
            .values(read_at=now)
            .execution_options(synchronize_session=False)
        )
        count = result.rowcount or 0
        member = session.get(ConversationMember, (conversation_id, reader.id))
        if member is not None and (member.last_read_message_id or "") < up_to_message_id:
            member.last_read_message_id = up_to_message_id
            member.last_read_at = now
        receipt = MessageRead(
            conversation_id=conversation_id,
            reader_id=reader.id,
            up_to_message_id=up_to_message_id,
            read_at=now,
            count=count,
        )
        if count:
            record_event(
                session, EventType.MESSAGE_READ, receipt, conversation_id=conversation_id, audience=membership.member_ids
            )
        unread = session.scalar(
            select(func.count()).where(Message.conversation_id == conversation_id, unread_by(reader.id))
        )
    return ReadState(receipt, unread_count=unread or 0)
