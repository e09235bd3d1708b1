"""Sending, paging and deleting messages."""

from __future__ import annotations

import mimetypes
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Integer, Select, String, bindparam, case, exists, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import note_events_recorded, one_statement, reading, transaction
from parley.errors import Conflict, Forbidden, Invalid, NotFound
from parley.events import EventType, MessageCreated, MessageDeleted
from parley.ids import is_valid_id, new_id
from parley.models import (
    Attachment,
    AttachmentKind,
    Block,
    Conversation,
    Message,
    MessageSource,
    User,
    UTCDateTime,
    utcnow,
)
from parley.services import policy
from parley.services.blocks import blocked_error
from parley.services.contact_info import protect_contact_info
from parley.schemas import AttachmentOut, MessageOut, UserSummary
from parley.services.attachments import claim_uploads, forget_message_uploads
from parley.services.conversations import get_member_conversation
from parley.services.message_views import (
    MESSAGE_COLUMNS,
    describe_message,
    describe_message_rows,
    message_view,
    summary_of,
    user_summaries,
)
from parley.services.outbox import EVENT_ORDER_LOCK_KEY, record_event

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
    # Uploads (POST /attachments) of the sender's, not used yet.
    attachment_ids: tuple[str, ...] = ()
    # Set by send_message, never by callers: what the sender wrote before contact details were
    # masked out of `content` (PARLEY_CONTACT_INFO=mask), kept for moderators.
    original_content: str | None = None


def field_error(field_name: str, message: str) -> Invalid:
    return Invalid(f"{field_name}: {message}", details={"fields": [{"field": field_name, "message": message}]})


def check_draft(draft: MessageDraft, settings: Settings) -> None:
    """Content counts in characters after trimming; it is stored exactly as sent."""
    length = len(draft.content.strip())
    if length == 0:
        raise field_error("content", "must not be empty")
    if length > settings.max_message_chars:
        raise field_error("content", f"must be at most {settings.max_message_chars} characters")
    if len(draft.attachments) + len(draft.attachment_ids) > MAX_ATTACHMENTS:
        raise field_error("attachments", f"at most {MAX_ATTACHMENTS} attachments per message")


def send_message(
    session: Session, settings: Settings, sender: User, conversation_id: str, draft: MessageDraft
) -> tuple[MessageOut, bool]:
    """Send `draft` into a conversation the sender belongs to, as the API, a worker or a consumer
    would: the message, its attachments and `message.created` are written in one transaction (the
    caller's, if one is open). Returns (message, created): a repeated `client_id` returns the
    message first sent with it and creates nothing.

    Every entry path comes through here, so here the safety rules apply, before either write path
    is chosen: contact details (PARLEY_CONTACT_INFO: masked, or 422 contact_info_not_allowed with
    nothing stored), the conversation policy (403 policy_denied), and blocks (403 blocked, checked
    by the write statement itself so an open-policy send stays one round trip)."""
    check_draft(draft, settings)
    if sender.suspended_at is not None:  # a worker acting for a suspended user (their tokens are refused)
        raise Forbidden("this account is suspended", code="suspended")
    draft = protect_contact_info(settings, draft)
    if settings.conversation_policy != "open":
        with reading(session):
            membership = get_member_conversation(session, conversation_id, sender.id)
            policy.check(session, settings, policy.Action.SEND, sender.id, membership.other_member_id(sender.id))
    if _is_plain_text(draft) and not session.in_transaction() and session.get_bind().dialect.name == "postgresql":
        return _send_text_in_one_statement(session, sender, conversation_id, draft)
    with transaction(session):
        if draft.client_id is None:
            return _write_message(session, conversation_id, sender, draft), True
        original = _replay(session, sender.id, conversation_id, draft)
        if original is not None:
            return original, False
        try:
            # A savepoint: losing a race with a concurrent send of the same client_id leaves the
            # transaction usable, to answer with the message that won.
            with session.begin_nested():
                return _write_message(session, conversation_id, sender, draft), True
        except IntegrityError:
            original = _replay(session, sender.id, conversation_id, draft)
            if original is None:
                raise
            return original, False


def _is_plain_text(draft: MessageDraft) -> bool:
    return not draft.attachments and not draft.attachment_ids


def _send_text_in_one_statement(
    session: Session, sender: User, conversation_id: str, draft: MessageDraft
) -> tuple[MessageOut, bool]:
    """send_message's own-transaction path for a text message on PostgreSQL: the write is one
    statement (_write_text_message_in_one_statement), atomic by itself, so it needs no BEGIN or
    COMMIT round trip. A repeated client_id is answered from the first read, or, when a
    concurrent send of it won the race, from the read after the unique violation."""
    if draft.client_id is not None:
        with reading(session):
            original = _replay(session, sender.id, conversation_id, draft)
        if original is not None:
            return original, False
    try:
        with one_statement(session):
            return _write_text_message_in_one_statement(session, conversation_id, sender, draft, utcnow()), True
    except IntegrityError:
        if draft.client_id is None:
            raise
        with reading(session):
            original = _replay(session, sender.id, conversation_id, draft)
        if original is None:
            raise
        return original, False


def _write_message(session: Session, conversation_id: str, sender: User, draft: MessageDraft) -> MessageOut:
    """Bump the conversation's activity (which also proves the sender is a member, and locks the
    row so one conversation's sends queue), insert the message and its attachments, and record
    `message.created` for both members. The draft is already checked."""
    not_found = NotFound("no such conversation", details={"conversation_id": conversation_id})
    if not is_valid_id(conversation_id):
        raise not_found
    now = utcnow()
    connection = session.connection()
    if connection.dialect.name == "postgresql" and _is_plain_text(draft):
        return _write_text_message_in_one_statement(session, conversation_id, sender, draft, now)
    bump = {"conversation_id": conversation_id, "sender_id": sender.id, "now": now}
    members = connection.execute(_BUMP_CONVERSATION, bump).first()
    if members is None:
        raise _refusal(session, conversation_id, sender.id)
    values = _message_row(conversation_id, sender, draft, now)
    connection.execute(_INSERT_MESSAGE, values)
    attachments = [_attachment_row(values["id"], a) for a in draft.attachments]
    if attachments:
        connection.execute(_INSERT_ATTACHMENT, attachments)
    shown = [AttachmentOut(**a) for a in attachments]
    if draft.attachment_ids:
        shown += claim_uploads(session, sender, values["id"], draft.attachment_ids)
    shown.sort(key=lambda a: a.id)  # the order history shows them in
    view = message_view(values, summary_of(sender), shown)
    record_event(
        session, EventType.MESSAGE_CREATED, MessageCreated(message=view), conversation_id=conversation_id, audience=members
    )
    return view


def _message_row(conversation_id: str, sender: User, draft: MessageDraft, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "conversation_id": conversation_id,
        "sender_id": sender.id,
        "content": draft.content,
        "created_at": now,
        "updated_at": now,
        "read_at": None,
        "deleted_at": None,
        "client_id": draft.client_id,
        "source": draft.source,
        "original_content": draft.original_content,
    }


def _write_text_message_in_one_statement(
    session: Session, conversation_id: str, sender: User, draft: MessageDraft, now: datetime
) -> MessageOut:
    """_write_message for a message without attachments on PostgreSQL, in one round trip: the same
    bump (membership and row lock), message row, event-order lock and `message.created` event
    (audience: both members) as the general path, as one statement of data-modifying CTEs. The
    send is the hottest path there is; four round trips become one."""
    values = _message_row(conversation_id, sender, draft, now)
    view = message_view(values, summary_of(sender), [])
    params = {
        "id": values["id"],
        "conversation_id": conversation_id,
        "sender_id": sender.id,
        "content": draft.content,
        "client_id": draft.client_id,
        "source": draft.source.value,
        "original_content": draft.original_content,
        "now": now,
        "payload": MessageCreated(message=view).model_dump_json(),
    }
    if session.connection().execute(_SEND_TEXT_MESSAGE, params).first() is None:
        raise _refusal(session, conversation_id, sender.id)
    note_events_recorded(session)
    return view


# The dependencies between the CTEs order them: the event's identity value is drawn only after
# the event-order lock is held (see parley.services.outbox.EVENT_ORDER_LOCK).
_SEND_TEXT_MESSAGE = text(f"""
WITH bumped AS (
    UPDATE conversations SET updated_at = GREATEST(updated_at, :now)
    WHERE id = :conversation_id AND (initiator_id = :sender_id OR recipient_id = :sender_id)
      AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.blocked_id = :sender_id
                      AND blocks.blocker_id IN (conversations.initiator_id, conversations.recipient_id))
    RETURNING initiator_id, recipient_id
), message AS (
    INSERT INTO messages (id, conversation_id, sender_id, content, created_at, updated_at, read_at, deleted_at,
                          client_id, source, original_content)
    SELECT :id, :conversation_id, :sender_id, :content, :now, :now, NULL, NULL, :client_id, :source,
           :original_content FROM bumped
    RETURNING id
), ordered AS (
    SELECT pg_advisory_xact_lock({EVENT_ORDER_LOCK_KEY}) FROM message
), event AS (
    INSERT INTO events (type, conversation_id, audience, payload, created_at, dispatch_count)
    SELECT '{EventType.MESSAGE_CREATED.value}', :conversation_id,
           jsonb_build_array(LEAST(initiator_id, recipient_id), GREATEST(initiator_id, recipient_id)),
           CAST(:payload AS jsonb), :now, 0
    FROM bumped, ordered
    RETURNING id
)
SELECT id FROM event
""").bindparams(bindparam("now", type_=UTCDateTime()))


def _refusal(session: Session, conversation_id: str, sender_id: str) -> Exception:
    """Why the send statement wrote nothing: the sender is no member (404, as for any stranger), or
    the other member blocked them (403 blocked, and nothing more)."""
    member = session.execute(
        select(Conversation.id).where(
            Conversation.id == conversation_id,
            or_(Conversation.initiator_id == sender_id, Conversation.recipient_id == sender_id),
        )
    ).first()
    if member is None:
        return NotFound("no such conversation", details={"conversation_id": conversation_id})
    return blocked_error()


# Built once, and run on the connection (Core, not the ORM): this is the send path.
_conversations = Conversation.__table__
_blocks = Block.__table__
_NOW = bindparam("now", type_=UTCDateTime())
_BUMP_CONVERSATION = (
    _conversations.update()
    .where(
        _conversations.c.id == bindparam("conversation_id", type_=String()),
        or_(
            _conversations.c.initiator_id == bindparam("sender_id", type_=String()),
            _conversations.c.recipient_id == bindparam("sender_id", type_=String()),
        ),
        ~exists().where(
            _blocks.c.blocked_id == bindparam("sender_id", type_=String()),
            _blocks.c.blocker_id.in_([_conversations.c.initiator_id, _conversations.c.recipient_id]),
        ),
    )
    .values(updated_at=case((_conversations.c.updated_at < _NOW, _NOW), else_=_conversations.c.updated_at))
    .returning(_conversations.c.initiator_id, _conversations.c.recipient_id)
)
_INSERT_MESSAGE = Message.__table__.insert()
_INSERT_ATTACHMENT = Attachment.__table__.insert()


def _attachment_row(message_id: str, draft: AttachmentDraft) -> dict[str, Any]:
    content_type = (
        draft.content_type
        or _MIME_TYPES.guess_type(draft.name)[0]
        or _MIME_TYPES.guess_type(urlsplit(draft.url).path)[0]
        or "application/octet-stream"
    )
    return {
        "id": new_id(),
        "message_id": message_id,
        "name": draft.name,
        "url": draft.url,
        "kind": attachment_kind(content_type),
        "content_type": content_type,
        "size": draft.size,
    }


def attachment_kind(content_type: str) -> AttachmentKind:
    major = content_type.split("/", 1)[0].lower()
    if major == "image":
        return AttachmentKind.IMAGE
    if major == "video":
        return AttachmentKind.VIDEO
    return AttachmentKind.DOCUMENT


def _replay(session: Session, sender_id: str, conversation_id: str, draft: MessageDraft) -> MessageOut | None:
    """The message first sent with this client_id, if any. Reusing a client_id for a different
    message (another conversation, other content) is a conflict, not a replay."""
    original_id = session.scalar(
        select(Message.id).where(Message.sender_id == sender_id, Message.client_id == draft.client_id)
    )
    if original_id is None:
        return None
    original = describe_message(session, original_id)
    assert original is not None
    same_request = original.conversation_id == conversation_id and (
        original.deleted_at is not None or original.content == draft.content
    )
    if not same_request:
        raise Conflict(
            "client_id was already used for a different message",
            code="client_id_reused",
            details={"client_id": draft.client_id, "message_id": original.id},
        )
    return original


def _history_query(*, direction: str) -> Select[Any]:
    query = select(*MESSAGE_COLUMNS).where(Message.conversation_id == bindparam("conversation_id", type_=String()))
    bound = bindparam("bound", type_=String())
    if direction == "between":
        upper = bindparam("upper", type_=String())
        query = query.where(Message.id < upper)
    if direction in ("forward", "between"):
        return query.where(Message.id > bound).order_by(Message.id.asc()).limit(bindparam("limit", type_=Integer()))
    if direction == "back_from":
        query = query.where(Message.id < bound)
    return query.order_by(Message.id.desc()).limit(bindparam("limit", type_=Integer()))


# Built once: a statement made per request costs more Python than its database round trip.
_HISTORY_LATEST = _history_query(direction="latest")
_HISTORY_BACK_FROM = _history_query(direction="back_from")
_HISTORY_FORWARD = _history_query(direction="forward")
_HISTORY_BETWEEN = _history_query(direction="between")


@dataclass(frozen=True)
class HistoryPage:
    items: list[MessageOut]
    # Paging back (default, or `before`): older messages exist. Paging forward (`after`, or between
    # `after` and `before`): newer ones do (before `before`).
    has_more: bool


def list_history(
    session: Session,
    viewer: User,
    conversation_id: str,
    *,
    before: str | None = None,
    after: str | None = None,
    limit: int = HISTORY_DEFAULT_LIMIT,
    settings: Settings | None = None,
) -> HistoryPage:
    """A page of messages, oldest to newest. Pages are cut at message ids, which are time-ordered
    and never change, so messages arriving meanwhile never shift or repeat a page."""
    for name, value in (("before", before), ("after", after)):
        if value is not None and not is_valid_id(value):
            raise field_error(name, "must be a message id")
    limit = max(1, min(limit, HISTORY_MAX_LIMIT))
    with reading(session):
        conversation = get_member_conversation(session, conversation_id, viewer.id)
        policy.read_allowed(session, settings, viewer.id, conversation.other_member_id(viewer.id))
        if after is not None and before is not None:
            query, bound = _HISTORY_BETWEEN, after
        elif after is not None:
            query, bound = _HISTORY_FORWARD, after
        elif before is not None:
            query, bound = _HISTORY_BACK_FROM, before
        else:
            query, bound = _HISTORY_LATEST, None
        params = {"conversation_id": conversation_id, "bound": bound, "limit": limit + 1}
        if query is _HISTORY_BETWEEN:
            params["upper"] = before
        rows = list((session.execute(query, params)).all())
        page = rows[:limit]
        if after is None:
            page.reverse()
        other_id = conversation.other_member_id(viewer.id)
        members = {viewer.id: summary_of(viewer)}
        if any(row.sender_id == other_id for row in page):
            members.update(user_summaries(session, [other_id]))
        items = describe_message_rows(session, page, members)
    return HistoryPage(items=items, has_more=len(rows) > limit)


def delete_message(session: Session, actor: User, message_id: str, settings: Settings | None = None) -> MessageOut:
    """Replace a message's content with a notice and remove its attachments, for both members and
    for good (unless PARLEY_RETAIN_DELETED_DAYS keeps the text, hidden from the members, for
    moderators until beat's purge). Only the sender may; deleting again changes nothing and records
    no event."""
    with transaction(session):
        message = (
            session.scalar(select(Message).where(Message.id == message_id).with_for_update())
            if is_valid_id(message_id)
            else None
        )
        conversation = session.get(Conversation, message.conversation_id) if message is not None else None
        if message is None or conversation is None or not conversation.has_member(actor.id):
            raise NotFound("no such message", details={"message_id": message_id})
        if message.sender_id != actor.id:
            raise Forbidden("only the sender can delete a message", code="not_sender")
        if message.deleted_at is None:
            view = remove_message_content(session, settings, message, conversation, DELETED_CONTENT, summary_of(actor))
        else:
            view = message_view(_row_of(message), summary_of(actor), [])
    return view


def remove_message_content(
    session: Session,
    settings: Settings | None,
    message: Message,
    conversation: Conversation,
    notice: str,
    sender: UserSummary,
) -> MessageOut:
    """In the caller's transaction: replace the content with `notice`, remove the attachments, and
    record `message.deleted` for both members. The text is kept in `original_content` (never shown
    to members) only while PARLEY_RETAIN_DELETED_DAYS is above 0."""
    now = utcnow()
    retain = settings is not None and settings.retain_deleted_days > 0
    message.original_content = (message.original_content or message.content) if retain else None
    message.content = notice
    message.deleted_at = now
    message.updated_at = now
    forget_message_uploads(session, message)
    session.flush()
    view = message_view(_row_of(message), sender, [])
    record_event(
        session,
        EventType.MESSAGE_DELETED,
        MessageDeleted(message=view),
        conversation_id=message.conversation_id,
        audience=conversation.member_ids,
    )
    return view


def _row_of(message: Message) -> dict[str, Any]:
    return {column.key: getattr(message, column.key) for column in MESSAGE_COLUMNS}
