"""Replies by email: who a reply address belongs to, and posting a reply as a message.

Parsing, stripping and storing attachments happen in the adapter (integrations/email/inbound.py);
these functions only read and write rows. A reply is posted with send_message (source `email`), so
it runs the same rules and records the same events as an HTTP send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import reading, transaction
from parley.models import EmailThread, InboundEmail, User, utcnow
from parley.services.attachments import SniffedType, record_upload
from parley.services.email_notifications import hash_reply_token
from parley.services.messages import MessageDraft, send_message
from parley.models import MessageSource


@dataclass(frozen=True)
class ReplyTarget:
    user_id: str
    email: str | None
    conversation_id: str


def find_reply_target(session: Session, token: str) -> ReplyTarget | None:
    """The (user, conversation) of a live reply token; None when unknown or revoked."""
    with reading(session):
        row = session.execute(
            select(EmailThread.user_id, EmailThread.conversation_id, User.email)
            .join(User, User.id == EmailThread.user_id)
            .where(EmailThread.reply_token_hash == hash_reply_token(token), EmailThread.reply_token_revoked_at.is_(None))
        ).first()
    return None if row is None else ReplyTarget(row.user_id, row.email, row.conversation_id)


@dataclass(frozen=True)
class StoredFile:
    attachment_id: str
    key: str
    sniffed: SniffedType
    size: int
    name: str | None


@dataclass(frozen=True)
class ReplyOutcome:
    message_id: str | None  # the posted message
    ignored: str | None  # why nothing was posted


def post_reply(
    session: Session,
    settings: Settings,
    target: ReplyTarget,
    inbound_message_id: str,
    text: str,
    files: list[StoredFile],
) -> ReplyOutcome:
    """Post a reply as a message from the target's user, once per inbound Message-ID, within the
    conversation's rate limit. The uploads and the message commit together."""
    with transaction(session):
        if session.get(InboundEmail, inbound_message_id) is not None:
            return ReplyOutcome(None, "duplicate")
        since = utcnow() - timedelta(hours=1)
        recent = session.scalar(
            select(func.count()).where(
                InboundEmail.conversation_id == target.conversation_id, InboundEmail.received_at > since
            )
        )
        if (recent or 0) >= settings.email_reply_rate_per_hour:
            return ReplyOutcome(None, "rate_limited")
        user = session.get(User, target.user_id)
        if user is None:
            return ReplyOutcome(None, "unknown_token")
        uploads = [
            record_upload(session, user, f.attachment_id, f.key, f.sniffed, f.size, f.name).id for f in files
        ]
        content = text or " ".join(f"📎 {f.name or 'attachment'}" for f in files)
        message, _ = send_message(
            session,
            settings,
            user,
            target.conversation_id,
            MessageDraft(content=content, attachment_ids=tuple(uploads), source=MessageSource.EMAIL),
        )
        try:
            with session.begin_nested():
                session.add(
                    InboundEmail(
                        message_id=inbound_message_id,
                        user_id=user.id,
                        conversation_id=target.conversation_id,
                        posted_message_id=message.id,
                        received_at=utcnow(),
                    )
                )
        except IntegrityError:  # the same reply, delivered twice at the same moment
            raise DuplicateReply() from None
    return ReplyOutcome(message.id, None)


class DuplicateReply(Exception):
    """Two deliveries of one reply raced; the other one posted it."""
