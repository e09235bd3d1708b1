"""Reading messages as the world sees them (sender and attachments included).

These are the hot read paths (history pages, inbox previews), so they select plain columns rather
than ORM objects: no identity map, no eager-load joins. A message's sender is always one of the
conversation's two members, whom the caller already knows, so users are never joined per message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, select
from sqlalchemy.orm import Session

from parley.models import Attachment, Message, User
from parley.schemas import AttachmentOut, MessageOut, UserSummary
from parley.services.attachment_views import ATTACHMENT_VIEW_COLUMNS, attachment_out

MESSAGE_COLUMNS = (
    Message.id,
    Message.conversation_id,
    Message.sender_id,
    Message.content,
    Message.created_at,
    Message.updated_at,
    Message.read_at,
    Message.deleted_at,
    Message.client_id,
    Message.source,
    Message.original_content,
)
CONTACT_INFO_FLAG = "contact_info"
def unread_by(viewer_id: str | ColumnElement[str]) -> ColumnElement[bool]:
    """Messages `viewer_id` has yet to read: the other member's, unread, and not deleted (a deleted
    message no longer asks to be read)."""
    return and_(Message.sender_id != viewer_id, Message.read_at.is_(None), Message.deleted_at.is_(None))


def summary_of(user: User) -> UserSummary:
    return UserSummary(id=user.id, username=user.username, name=user.name, avatar_url=user.avatar_url)


def message_view(
    row: Row[Any] | Mapping[str, Any], sender: UserSummary, attachments: list[AttachmentOut]
) -> MessageOut:
    values = row._mapping if isinstance(row, Row) else row
    return MessageOut(
        id=values["id"],
        conversation_id=values["conversation_id"],
        sender_id=values["sender_id"],
        sender=sender,
        content=values["content"],
        attachments=attachments,
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        read_at=values["read_at"],
        deleted_at=values["deleted_at"],
        client_id=values["client_id"],
        source=values["source"],
        flags=[CONTACT_INFO_FLAG] if values.get("original_content") is not None and values["deleted_at"] is None else [],
    )


def attachments_of(session: Session, message_ids: Sequence[str]) -> dict[str, list[AttachmentOut]]:
    """Attachments of several messages, in the order they were attached, keyed by message id."""
    if not message_ids:
        return {}
    found: dict[str, list[AttachmentOut]] = {}
    rows = session.execute(
        select(*ATTACHMENT_VIEW_COLUMNS).where(Attachment.message_id.in_(message_ids)).order_by(Attachment.id)
    )
    for row in rows:
        found.setdefault(row.message_id, []).append(attachment_out(row._mapping))
    return found


def user_summaries(session: Session, user_ids: Sequence[str]) -> dict[str, UserSummary]:
    rows = session.execute(
        select(User.id, User.username, User.name, User.avatar_url).where(User.id.in_(user_ids))
    )
    return {
        row.id: UserSummary(id=row.id, username=row.username, name=row.name, avatar_url=row.avatar_url)
        for row in rows
    }


def describe_message_rows(
    session: Session, rows: Sequence[Row[Any]], members: Mapping[str, UserSummary]
) -> list[MessageOut]:
    """Message rows of one conversation as MessageOut; `members` maps its two member ids to their
    summaries."""
    attachments = attachments_of(session, [row.id for row in rows])
    return [message_view(row, members[row.sender_id], attachments.get(row.id, [])) for row in rows]


def describe_message(session: Session, message_id: str) -> MessageOut | None:
    """One message by id, with its sender looked up (for the rare paths that start from an id)."""
    row = (session.execute(select(*MESSAGE_COLUMNS).where(Message.id == message_id))).first()
    if row is None:
        return None
    members = user_summaries(session, [row.sender_id])
    return (describe_message_rows(session, [row], members))[0]
