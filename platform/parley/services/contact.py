"""First contact: find or open the conversation with another user and, optionally, send the first
message, all in one transaction (the seeds' "the first message creates the conversation")."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import transaction
from parley.models import Conversation, User
from parley.schemas import ConversationOut, MessageOut
from parley.services.conversations import OtherUser, get_or_create_conversation, show_conversation
from parley.services.messages import MessageDraft, send_message


@dataclass(frozen=True)
class Contact:
    conversation: Conversation
    created: bool
    message: MessageOut | None


def contact_user(
    session: Session, settings: Settings, actor: User, other: OtherUser, first_message: MessageDraft | None = None
) -> Contact:
    """Find or start the conversation with `other`, and send the optional first message, in one
    transaction."""
    with transaction(session):
        conversation, created = get_or_create_conversation(session, actor, other, settings)
        message = None
        if first_message is not None:
            message, _ = send_message(session, settings, actor, conversation.id, first_message)
    return Contact(conversation=conversation, created=created, message=message)


def start_conversation(
    session: Session, settings: Settings, actor: User, other: OtherUser, first_message: MessageDraft | None = None
) -> tuple[ConversationOut, bool]:
    """contact_user, answered with the conversation as `actor` sees it: (view, created)."""
    contact = contact_user(session, settings, actor, other, first_message)
    return show_conversation(session, actor, contact.conversation.id, settings=settings), contact.created
