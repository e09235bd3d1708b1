"""Sending, paging and deleting messages."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.config import Settings
from parley.db import write_transaction
from parley.errors import Conflict, Forbidden, Invalid, NotFound
from parley.events import EventType, MessageCreated, MessageDeleted
from parley.ids import is_valid_id, new_id
from parley.models import Attachment, AttachmentKind, Conversation, Message, MessageSource, User, utcnow
from parley.schemas import MessageOut
from parley.services.conversations import get_member_conversation
from parley.services.message_views import load_messages, view_of, views_of
from parley.services.outbox import record_event

MAX_ATTACHMENTS = 10
DELETED_CONTENT = "This message was deleted"
HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200
# Python's built-in table only, not the host's /etc/mime.types: the same file name gets the same
# type on every machine.
_MIME_TYPES = mimetypes.MimeTypes()


@dataclass(frozen=True)
class AttachmentDraft:
    name: str
    url: str
    content_type: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class MessageDraft:
    content: str
    attachments: tuple[AttachmentDraft, ...] = field(default_factory=tuple)
    client_id: str | None = None
    source: MessageSource = MessageSource.API


def field_error(field_name: str, message: str) -> Invalid:
    return Invalid(f"{field_name}: {message}", details={"fields": [{"field": field_name, "message": message}]})


def check_draft(draft: MessageDraft, settings: Settings) -> None:
    """Content counts in characters after trimming; it is stored exactly as sent."""
    length = len(draft.content.strip())
    if length == 0:
        raise field_error("content", "must not be empty")
    if length > settings.max_message_chars:
        raise field_error("content", f"must be at most {settings.max_message_chars} characters")
    if len(draft.attachments) > MAX_ATTACHMENTS:
        raise field_error("attachments", f"at most {MAX_ATTACHMENTS} attachments per message")


async def send_message(
    session: AsyncSession, settings: Settings, sender: User, conversation_id: str, draft: MessageDraft
) -> tuple[MessageOut, bool]:
    """Send `draft` into a conversation the sender belongs to. Returns (message, created): a
    repeated `client_id` returns the message first sent with it and creates nothing."""
    check_draft(draft, settings)
    try:
        async with write_transaction(session):
            if draft.client_id is not None:
                original = await _find_by_client_id(session, sender.id, draft.client_id)
                if original is not None:
                    return _replay(original, conversation_id, draft), False
            conversation = await get_member_conversation(session, conversation_id, sender.id)
            return await write_message(session, conversation, sender, draft), True
    except IntegrityError:
        if draft.client_id is None:
            raise
        # Two sends with one client_id raced and the other committed first: answer with its message.
        async with session.begin():
            original = await _find_by_client_id(session, sender.id, draft.client_id)
            if original is None:
                raise
            return _replay(original, conversation_id, draft), False


async def write_message(
    session: AsyncSession, conversation: Conversation, sender: User, draft: MessageDraft
) -> MessageOut:
    """Insert the message, bump the conversation's activity and record `message.created`, in the
    caller's transaction (already checked: the sender is a member and the draft is valid)."""
    now = utcnow()
    message = Message(
        id=new_id(),
        conversation_id=conversation.id,
        sender_id=sender.id,
        content=draft.content,
        created_at=now,
        updated_at=now,
        client_id=draft.client_id,
        source=draft.source,
    )
    attachments = [_attachment_row(message.id, a) for a in draft.attachments]
    session.add(message)
    session.add_all(attachments)
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.updated_at < now)
        .values(updated_at=now)
    )
    view = MessageOut.of(message, sender, attachments)
    record_event(session, EventType.MESSAGE_CREATED, MessageCreated(message=view), conversation_id=conversation.id)
    await session.flush()  # surfaces a duplicate client_id here, inside the transaction
    return view


def _attachment_row(message_id: str, draft: AttachmentDraft) -> Attachment:
    content_type = (
        draft.content_type
        or _MIME_TYPES.guess_type(draft.name)[0]
        or _MIME_TYPES.guess_type(urlsplit(draft.url).path)[0]
        or "application/octet-stream"
    )
    return Attachment(
        id=new_id(),
        message_id=message_id,
        name=draft.name,
        url=draft.url,
        kind=attachment_kind(content_type),
        content_type=content_type,
        size=draft.size,
    )


def attachment_kind(content_type: str) -> AttachmentKind:
    major = content_type.split("/", 1)[0].lower()
    if major == "image":
        return AttachmentKind.IMAGE
    if major == "video":
        return AttachmentKind.VIDEO
    return AttachmentKind.DOCUMENT


async def _find_by_client_id(session: AsyncSession, sender_id: str, client_id: str) -> Message | None:
    found = await load_messages(
        session, select(Message).where(Message.sender_id == sender_id, Message.client_id == client_id)
    )
    return found[0] if found else None


def _replay(original: Message, conversation_id: str, draft: MessageDraft) -> MessageOut:
    same_request = original.conversation_id == conversation_id and (
        original.deleted_at is not None or original.content == draft.content
    )
    if not same_request:
        raise Conflict(
            "client_id was already used for a different message",
            code="client_id_reused",
            details={"client_id": draft.client_id, "message_id": original.id},
        )
    return view_of(original)


@dataclass(frozen=True)
class HistoryPage:
    items: list[MessageOut]
    # Paging back (default, or `before`): older messages exist. Paging forward (`after`): newer ones do.
    has_more: bool


async def list_history(
    session: AsyncSession,
    viewer: User,
    conversation_id: str,
    *,
    before: str | None = None,
    after: str | None = None,
    limit: int = HISTORY_DEFAULT_LIMIT,
) -> HistoryPage:
    """A page of messages, oldest to newest. Pages are cut at message ids, which are time-ordered
    and never change, so messages arriving meanwhile never shift or repeat a page."""
    if before is not None and after is not None:
        raise field_error("before", "give before or after, not both")
    for name, value in (("before", before), ("after", after)):
        if value is not None and not is_valid_id(value):
            raise field_error(name, "must be a message id")
    limit = max(1, min(limit, HISTORY_MAX_LIMIT))
    async with session.begin():
        await get_member_conversation(session, conversation_id, viewer.id)
        query = select(Message).where(Message.conversation_id == conversation_id)
        if after is not None:
            query = query.where(Message.id > after).order_by(Message.id.asc())
        else:
            if before is not None:
                query = query.where(Message.id < before)
            query = query.order_by(Message.id.desc())
        rows = list(await load_messages(session, query.limit(limit + 1)))
    page = rows[:limit]
    if after is None:
        page.reverse()
    return HistoryPage(items=views_of(page), has_more=len(rows) > limit)


async def delete_message(session: AsyncSession, actor: User, message_id: str) -> MessageOut:
    """Replace a message's content with a notice and remove its attachments, for both members and
    for good. Only the sender may; deleting again changes nothing and records no event."""
    async with write_transaction(session):
        found = (
            await load_messages(
                session, select(Message).where(Message.id == message_id).with_for_update(of=Message)
            )
            if is_valid_id(message_id)
            else []
        )
        conversation = await session.get(Conversation, found[0].conversation_id) if found else None
        if conversation is None or not conversation.has_member(actor.id):
            raise NotFound("no such message", details={"message_id": message_id})
        message = found[0]
        if message.sender_id != actor.id:
            raise Forbidden("only the sender can delete a message", code="not_sender")
        if message.deleted_at is not None:
            return view_of(message)
        now = utcnow()
        message.content = DELETED_CONTENT
        message.deleted_at = now
        message.updated_at = now
        message.attachments.clear()
        view = view_of(message)
        record_event(session, EventType.MESSAGE_DELETED, MessageDeleted(message=view), conversation_id=message.conversation_id)
    return view
