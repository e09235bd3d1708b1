"""First contact: find or open the conversation with another user and, optionally, send the first
message, all in one transaction (the seeds' "the first message creates the conversation")."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from parley.config import Settings
from parley.db import write_transaction
from parley.models import Conversation, User
from parley.schemas import MessageOut
from parley.services.conversations import OtherUser, get_or_create_in_transaction
from parley.services.messages import MessageDraft, check_draft, send_message, write_message


@dataclass(frozen=True)
class Contact:
    conversation: Conversation
    created: bool
    message: MessageOut | None


async def contact_user(
    session: AsyncSession, settings: Settings, actor: User, other: OtherUser, first_message: MessageDraft | None = None
) -> Contact:
    if first_message is not None:
        check_draft(first_message, settings)
    async with write_transaction(session):
        conversation, created = await get_or_create_in_transaction(session, actor, other)
        if first_message is None or first_message.client_id is not None:
            message = None
        else:
            message = await write_message(session, conversation.id, actor, first_message)
    if first_message is not None and first_message.client_id is not None:
        # An idempotent first message goes through send_message's replay rules, in its own
        # transaction after the conversation exists (retrying creates neither twice).
        message, _ = await send_message(session, settings, actor, conversation.id, first_message)
    return Contact(conversation=conversation, created=created, message=message)
