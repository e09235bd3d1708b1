"""Notification emails of unread messages: the batching window, what one email lists, the
outgoing-email record each send works from, the thread's reply token and unsubscribing.

Rows only (the adapter, workers/email_tasks.py, checks presence and talks SMTP around these calls):
- note_message_created (the `email.notify` consumer's handler): a message for a user who wants
  emails opens the conversation's window, `due_at` = now + PARLEY_EMAIL_BATCH_SECONDS, unless one
  is already open (then the message simply joins it).
- prepare_notification, at the end of the window: every message of the other member still unread,
  not deleted and newer than `notified_up_to` goes into ONE outgoing email, and `notified_up_to`
  moves past them, so no message is ever in two emails. Read meanwhile, or the user connected:
  nothing is sent (and those messages are settled: they will not be in a later email either).
- claim_email / record_*: one send at a time per email (a lease), never again once sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import reading, transaction
from parley.ids import new_id
from parley.models import (
    Conversation,
    EmailDigest,
    EmailStatus,
    EmailThread,
    Message,
    OutgoingEmail,
    User,
    UserKind,
    utcnow,
)
from parley.schemas import MessageOut
from parley.secret_box import derived_key, secret_box
from parley.services.message_views import MESSAGE_COLUMNS, describe_message_rows, unread_by, user_summaries

NOTIFICATION_KIND = "notification"
MAX_MESSAGES_PER_EMAIL = 50
REPLY_TOKEN_BYTES = 20  # 160 bits, base32: case-insensitive, safe in an address's local part
SEND_LEASE_SECONDS = 120.0


# --- who wants an email ---------------------------------------------------------------------------


def wants_notification(user: User, message: MessageOut) -> bool:
    """Whether `user` wants an email for `message`. Messages of the `order_update` category (added
    by the bots issue) will follow `user.order_updates_notifications` here instead; every message
    today is a conversation message, governed by `inbox_notifications`."""
    if user.kind is not UserKind.USER or not user.email:
        return False
    return bool(user.inbox_notifications)


def note_message_created(session: Session, settings: Settings, message: MessageOut, audience: tuple[str, ...]) -> None:
    recipients = [user_id for user_id in audience if user_id != message.sender_id]
    if not recipients:
        return
    with transaction(session):
        users = session.scalars(select(User).where(User.id.in_(recipients))).all()
        due = message.created_at + timedelta(seconds=settings.email_batch_seconds)
        for user in users:
            if not wants_notification(user, message):
                continue
            _open_window(session, user.id, message.conversation_id, due, message.id)


def _open_window(session: Session, user_id: str, conversation_id: str, due: datetime, message_id: str) -> None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(EmailThread)
        .values(user_id=user_id, conversation_id=conversation_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["user_id", "conversation_id"])
    )
    session.execute(
        update(EmailThread)
        .where(
            EmailThread.user_id == user_id,
            EmailThread.conversation_id == conversation_id,
            EmailThread.due_at.is_(None),
            # A message an earlier email (or a settled window) already covered opens nothing.
            func.coalesce(EmailThread.notified_up_to, "") < message_id,
        )
        .values(due_at=due)
        .execution_options(synchronize_session=False)
    )


# --- the end of a window --------------------------------------------------------------------------


def due_threads(session: Session, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
    with reading(session):
        rows = session.execute(
            select(EmailThread.user_id, EmailThread.conversation_id)
            .where(EmailThread.due_at.is_not(None), EmailThread.due_at <= now)
            .order_by(EmailThread.due_at)
            .limit(limit)
        )
        return [(row.user_id, row.conversation_id) for row in rows]


@dataclass(frozen=True)
class NotificationFacts:
    email_id: str
    recipient: User
    other: User
    conversation_id: str
    messages: list[MessageOut]
    reply_token: str | None


@dataclass(frozen=True)
class ComposedEmail:
    message_id: str  # without angle brackets
    subject: str
    content: bytes


Compose = Callable[[NotificationFacts], ComposedEmail]


def prepare_notification(
    session: Session,
    settings: Settings,
    user_id: str,
    conversation_id: str,
    *,
    connected: bool,
    compose: Compose,
    now: datetime | None = None,
) -> str | None:
    """Close the thread's window if it is due: record one outgoing email listing the unread
    messages and return its id, or None when nothing is to be sent (read, connected, unsubscribed,
    not due any more: another worker took it)."""
    now = now or utcnow()
    with transaction(session):
        thread = session.scalars(
            select(EmailThread)
            .where(EmailThread.user_id == user_id, EmailThread.conversation_id == conversation_id)
            .with_for_update(skip_locked=True)
        ).first()
        if thread is None or thread.due_at is None or thread.due_at > now:
            return None
        thread.due_at = None
        rows = session.execute(
            select(*MESSAGE_COLUMNS)
            .where(
                Message.conversation_id == conversation_id,
                unread_by(user_id),
                Message.id > (thread.notified_up_to or ""),
            )
            .order_by(Message.id)
        ).all()
        if not rows:
            return None
        thread.notified_up_to = rows[-1].id  # settled, sent or not: never in a later email
        recipient = session.get(User, user_id)
        conversation = session.get(Conversation, conversation_id)
        if recipient is None or conversation is None or connected:
            return None
        other_id = next(m for m in conversation.member_ids if m != user_id)
        other = session.get(User, other_id)
        assert other is not None
        members = user_summaries(session, [user_id, other_id])
        messages = describe_message_rows(session, rows[-MAX_MESSAGES_PER_EMAIL:], members)
        messages = [m for m in messages if wants_notification(recipient, m)]
        if not messages:
            return None
        token = _reply_token(thread, settings) if settings.email_reply_domain else None
        facts = NotificationFacts(new_id(), recipient, other, conversation_id, messages, token)
        composed = compose(facts)
        assert recipient.email is not None
        session.add(
            OutgoingEmail(
                id=facts.email_id,
                kind=NOTIFICATION_KIND,
                user_id=user_id,
                conversation_id=conversation_id,
                recipient=recipient.email,
                message_id=composed.message_id,
                subject=composed.subject,
                content=composed.content.decode("utf-8", "surrogateescape"),
                status=EmailStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        return facts.email_id


# --- reply tokens ---------------------------------------------------------------------------------


def hash_reply_token(token: str) -> str:
    return hashlib.sha256(token.lower().encode("utf-8")).hexdigest()


def _reply_token(thread: EmailThread, settings: Settings) -> str:
    """The thread's reply token: made once (random, 160 bits), kept until revoked. Stored as a hash
    to look replies up by, and encrypted so later emails carry the same address."""
    box = secret_box(settings)
    if thread.reply_token_encrypted and thread.reply_token_revoked_at is None:
        return box.decrypt(thread.reply_token_encrypted)
    token = base64.b32encode(secrets.token_bytes(REPLY_TOKEN_BYTES)).decode("ascii").lower().rstrip("=")
    thread.reply_token_hash = hash_reply_token(token)
    thread.reply_token_encrypted = box.encrypt(token)
    thread.reply_token_revoked_at = None
    return token


def revoke_reply_token(session: Session, user_id: str, conversation_id: str) -> bool:
    """The thread's reply address stops working at once; the next notification carries a new one."""
    with transaction(session):
        result = session.execute(
            update(EmailThread)
            .where(
                EmailThread.user_id == user_id,
                EmailThread.conversation_id == conversation_id,
                EmailThread.reply_token_hash.is_not(None),
                EmailThread.reply_token_revoked_at.is_(None),
            )
            .values(reply_token_revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)


# --- unsubscribing (RFC 8058) ---------------------------------------------------------------------


NOTIFICATIONS_LIST = "notifications"
DIGEST_LIST = "digest"
UNSUBSCRIBE_LISTS = (NOTIFICATIONS_LIST, DIGEST_LIST)


def _unsubscribe_mac(settings: Settings, message: str) -> str:
    mac = hmac.new(derived_key(settings, b"email unsubscribe v1"), message.encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")


def unsubscribe_token(settings: Settings, user_id: str, what: str = NOTIFICATIONS_LIST) -> str:
    """The token says which emails it stops. Notifications: <user id>.<HMAC-SHA256 of the id> (the
    form every notification already sent carries); digests: <user id>.digest.<HMAC of
    "digest:<user id>">. Under a key derived from PARLEY_SECRET_KEY: cannot be forged, and needs no
    row."""
    if what == NOTIFICATIONS_LIST:
        return f"{user_id}.{_unsubscribe_mac(settings, user_id)}"
    if what not in UNSUBSCRIBE_LISTS:
        raise ValueError(f"no such list: {what}")
    return f"{user_id}.{what}.{_unsubscribe_mac(settings, f'{what}:{user_id}')}"


def read_unsubscribe_token(settings: Settings, token: str) -> tuple[str, str] | None:
    """(user id, which emails) of one of our tokens; None for anything else."""
    parts = token.split(".")
    if len(parts) == 2:
        user_id, what = parts[0], NOTIFICATIONS_LIST
    elif len(parts) == 3 and parts[1] in UNSUBSCRIBE_LISTS and parts[1] != NOTIFICATIONS_LIST:
        user_id, what = parts[0], parts[1]
    else:
        return None
    if not user_id or not hmac.compare_digest(unsubscribe_token(settings, user_id, what), token):
        return None
    return user_id, what


def unsubscribe_user_of(settings: Settings, token: str) -> str | None:
    found = read_unsubscribe_token(settings, token)
    return found[0] if found is not None else None


def unsubscribe(session: Session, settings: Settings, token: str) -> bool:
    """Turn off what the token's emails were: notification emails (`inbox_notifications`) or digests
    (`email_digest` off, nothing due any more). False: the token is not one of ours."""
    found = read_unsubscribe_token(settings, token)
    if found is None:
        return False
    user_id, what = found
    with transaction(session):
        user = session.get(User, user_id)
        if user is None:
            return False
        if what == DIGEST_LIST:
            user.email_digest = EmailDigest.OFF
            user.next_digest_at = None
        else:
            user.inbox_notifications = False
    return True


# --- sending bookkeeping --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedEmail:
    id: str
    recipient: str
    content: bytes
    attempts: int


def claim_email(session: Session, email_id: str, now: datetime | None = None) -> ClaimedEmail | None:
    """Take one email for a send attempt: pending, or sending with a lapsed lease (its sender died).
    None if it is sent, failed, or another task holds it."""
    now = now or utcnow()
    with transaction(session):
        email = session.scalars(
            select(OutgoingEmail).where(OutgoingEmail.id == email_id).with_for_update(skip_locked=True)
        ).first()
        if email is None or email.status in (EmailStatus.SENT, EmailStatus.FAILED):
            return None
        if email.status is EmailStatus.SENDING and email.next_attempt_at is not None and email.next_attempt_at > now:
            return None
        email.status = EmailStatus.SENDING
        email.attempts += 1
        email.next_attempt_at = now + timedelta(seconds=SEND_LEASE_SECONDS)
        return ClaimedEmail(email.id, email.recipient, email.content.encode("utf-8", "surrogateescape"), email.attempts)


def claim_emails(session: Session, email_ids: list[str], now: datetime | None = None) -> list[ClaimedEmail]:
    """claim_email for many at once (one transaction): those free to send, in the order given."""
    now = now or utcnow()
    with transaction(session):
        emails = session.scalars(
            select(OutgoingEmail).where(OutgoingEmail.id.in_(email_ids)).with_for_update(skip_locked=True)
        ).all()
        claimed = {}
        for email in emails:
            if email.status in (EmailStatus.SENT, EmailStatus.FAILED):
                continue
            if email.status is EmailStatus.SENDING and email.next_attempt_at is not None and email.next_attempt_at > now:
                continue
            email.status = EmailStatus.SENDING
            email.attempts += 1
            email.next_attempt_at = now + timedelta(seconds=SEND_LEASE_SECONDS)
            claimed[email.id] = ClaimedEmail(
                email.id, email.recipient, email.content.encode("utf-8", "surrogateescape"), email.attempts
            )
        return [claimed[i] for i in email_ids if i in claimed]


def record_sent(session: Session, email_id: str) -> None:
    record_sent_many(session, [email_id])


def record_sent_many(session: Session, email_ids: list[str]) -> None:
    if not email_ids:
        return
    with transaction(session):
        session.execute(
            update(OutgoingEmail)
            .where(OutgoingEmail.id.in_(email_ids))
            .values(status=EmailStatus.SENT, sent_at=utcnow(), next_attempt_at=None, last_error=None)
        )


def record_retry(session: Session, email_id: str, error: str, retry_at: datetime) -> None:
    with transaction(session):
        session.execute(
            update(OutgoingEmail)
            .where(OutgoingEmail.id == email_id, OutgoingEmail.status == EmailStatus.SENDING)
            .values(status=EmailStatus.PENDING, next_attempt_at=retry_at, last_error=error[:500])
        )


def record_failed(session: Session, email_id: str, error: str) -> None:
    with transaction(session):
        session.execute(
            update(OutgoingEmail)
            .where(OutgoingEmail.id == email_id)
            .values(status=EmailStatus.FAILED, next_attempt_at=None, last_error=error[:500])
        )


def due_emails(session: Session, now: datetime, limit: int = 500) -> list[str]:
    """Emails whose send is due (a retry's time came, or a sender's lease lapsed): the sweep's work."""
    with reading(session):
        return list(
            session.scalars(
                select(OutgoingEmail.id)
                .where(
                    OutgoingEmail.status.in_([EmailStatus.PENDING, EmailStatus.SENDING]),
                    OutgoingEmail.next_attempt_at <= now,
                )
                .order_by(OutgoingEmail.next_attempt_at)
                .limit(limit)
            )
        )
