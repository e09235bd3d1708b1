"""Digests of unread messages: who is due, what a digest lists, and recording it so that no message
is ever in two digests of the same user.

Rows only (workers/digest_tasks.py and `parley digests` compose, send and schedule around these):
- due_digest_users: the users whose `next_digest_at` has come, read off its partial index, so the
  sweep's cost follows the number of due users, not of all users.
- prepare_digests, for a batch of users in ONE transaction: locks the users still due (SKIP LOCKED:
  a racing sweep skips them, and sees them rescheduled once this commits), gathers each one's
  messages that are unread, not deleted and in no earlier digest of theirs (digest_items), records
  one outgoing email per user with any, records every message it lists in digest_items (primary
  key (user, message): a second run, a retry, a second beat or a forced run racing this one cannot
  list a message again: at worst its transaction fails and lists nothing), and moves each user's
  `next_digest_at` to their next local digest hour.
- collect_digests: the same gathering without recording (`parley digests preview`, --dry-run).
- reschedule: `next_digest_at` from the settings, whenever they change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, insert, select, update
from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import reading, transaction
from parley.digest_times import next_digest_at, zone_of
from parley.ids import new_id
from parley.models import (
    Conversation,
    DigestItem,
    EmailDigest,
    EmailStatus,
    Message,
    OutgoingEmail,
    User,
    UserKind,
    utcnow,
)
from parley.schemas import UserSummary
from parley.services.email_notifications import ComposedEmail
from parley.services.message_views import attachments_of, user_summaries

DIGEST_KIND = "digest"
LATEST_PER_CONVERSATION = 3  # the latest few messages shown of each conversation
SHORTENED_CHARS = 200
MAX_CONVERSATIONS_SHOWN = 25  # more are counted in the total, not shown one by one
BATCH_SIZE = 250  # users per prepare_digests transaction


# --- scheduling -----------------------------------------------------------------------------------


def wants_digest(user: User | Any) -> bool:
    return bool(user.email) and str(user.kind) == UserKind.USER.value and str(user.email_digest) != EmailDigest.OFF.value


def next_digest_for(user: User | Any, now: datetime) -> datetime | None:
    return next_digest_at(
        now,
        enabled=wants_digest(user),
        frequency=str(user.email_digest),
        zone=user.timezone,
        hour=user.digest_hour,
        weekday=str(user.digest_weekday),
    )


def reschedule(user: User, now: datetime | None = None) -> None:
    """After a change of email_digest, timezone, digest_hour or digest_weekday."""
    user.next_digest_at = next_digest_for(user, now or utcnow())


def due_digest_users(session: Session, now: datetime, limit: int = 250_000) -> list[str]:
    with reading(session):
        return list(
            session.scalars(
                select(User.id).where(User.next_digest_at <= now).order_by(User.next_digest_at).limit(limit)
            )
        )


def digest_users(session: Session, after: str = "", limit: int = 5000) -> list[str]:
    """Everyone who wants digests, due or not, by id from `after` (`parley digests send --force`)."""
    with reading(session):
        return list(
            session.scalars(
                select(User.id)
                .where(
                    User.id > after,
                    User.email_digest != EmailDigest.OFF,
                    User.kind == UserKind.USER,
                    User.email.is_not(None),
                )
                .order_by(User.id)
                .limit(limit)
            )
        )


# --- what a digest lists --------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestMessage:
    id: str
    sender_name: str
    created_at: datetime
    text: str  # shortened
    attachment_names: list[str]


@dataclass(frozen=True)
class DigestConversation:
    conversation_id: str
    other: UserSummary
    unread: int  # new unread messages in this digest
    latest: list[DigestMessage]  # the last few of them, oldest first
    url: str | None


@dataclass(frozen=True)
class DigestFacts:
    email_id: str
    user_id: str
    recipient_name: str
    recipient_email: str
    frequency: str
    timezone: str
    conversations: list[DigestConversation]  # most recent activity first
    total_messages: int
    total_conversations: int  # all of them, also those past MAX_CONVERSATIONS_SHOWN
    message_ids: list[str] = field(repr=False)


Compose = Callable[[DigestFacts], ComposedEmail]

_SPACES = re.compile(r"\s+")


def shorten(text: str, limit: int = SHORTENED_CHARS) -> str:
    flat = _SPACES.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"


def conversation_url(settings: Settings, conversation_id: str) -> str | None:
    template = settings.conversation_url_template
    return template.replace("{conversation_id}", conversation_id) if template else None


_RECIPIENT_COLUMNS = (
    User.id,
    User.name,
    User.email,
    User.kind,
    User.email_digest,
    User.timezone,
    User.digest_hour,
    User.digest_weekday,
)


def _new_unread(session: Session, user_ids: Sequence[str]) -> list[Any]:
    """Messages to `user_ids` that are unread, not deleted and in none of their digests: two
    indexed reads (the users' conversations on each side, then each one's unread rows)."""
    rows: list[Any] = []
    for mine, theirs in ((Conversation.initiator_id, Conversation.recipient_id),
                         (Conversation.recipient_id, Conversation.initiator_id)):
        rows += session.execute(
            select(
                Message.id,
                Message.conversation_id,
                Message.sender_id,
                Message.content,
                Message.created_at,
                mine.label("recipient_id"),
            )
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                mine.in_(user_ids),
                Message.sender_id == theirs,
                Message.read_at.is_(None),
                Message.deleted_at.is_(None),
                ~exists().where(DigestItem.user_id == mine, DigestItem.message_id == Message.id),
            )
        ).all()
    return rows


def _gather(session: Session, settings: Settings, recipients: Sequence[Any]) -> dict[str, DigestFacts]:
    if not recipients:
        return {}
    by_user: dict[str, dict[str, list[Any]]] = {}
    for row in _new_unread(session, [r.id for r in recipients]):
        by_user.setdefault(row.recipient_id, {}).setdefault(row.conversation_id, []).append(row)
    if not by_user:
        return {}
    others: set[str] = set()
    shown: list[Any] = []
    for conversations in by_user.values():
        ordered = sorted(conversations.values(), key=lambda rows: max(r.id for r in rows), reverse=True)
        for rows in ordered[:MAX_CONVERSATIONS_SHOWN]:
            rows.sort(key=lambda r: r.id)
            others.add(rows[0].sender_id)
            shown += rows[-LATEST_PER_CONVERSATION:]
    summaries = user_summaries(session, sorted(others))
    attachments = attachments_of(session, [r.id for r in shown])
    facts: dict[str, DigestFacts] = {}
    for recipient in recipients:
        conversations = by_user.get(recipient.id)
        if not conversations or not recipient.email:
            continue
        ordered = sorted(conversations.values(), key=lambda rows: max(r.id for r in rows), reverse=True)
        listed = []
        for rows in ordered[:MAX_CONVERSATIONS_SHOWN]:
            other = summaries[rows[0].sender_id]
            latest = [
                DigestMessage(
                    id=r.id,
                    sender_name=other.name,
                    created_at=r.created_at,
                    text=shorten(r.content),
                    attachment_names=[a.name for a in attachments.get(r.id, [])],
                )
                for r in rows[-LATEST_PER_CONVERSATION:]
            ]
            listed.append(DigestConversation(rows[0].conversation_id, other, len(rows), latest,
                                             conversation_url(settings, rows[0].conversation_id)))
        message_ids = sorted(r.id for rows in conversations.values() for r in rows)
        facts[recipient.id] = DigestFacts(
            email_id=new_id(),
            user_id=recipient.id,
            recipient_name=recipient.name,
            recipient_email=recipient.email,
            frequency=str(recipient.email_digest),
            timezone=zone_of(recipient.timezone).key,
            conversations=listed,
            total_messages=len(message_ids),
            total_conversations=len(conversations),
            message_ids=message_ids,
        )
    return facts


def collect_digests(session: Session, settings: Settings, user_ids: Sequence[str]) -> dict[str, DigestFacts]:
    """What each user's digest would list now, recording nothing (preview, --dry-run)."""
    with reading(session):
        recipients = session.execute(select(*_RECIPIENT_COLUMNS).where(User.id.in_(user_ids))).all()
        return _gather(session, settings, recipients)


@dataclass(frozen=True)
class PreparedDigests:
    email_ids: list[str]
    users: int  # users taken (due, or all asked for with force)
    messages: int


def prepare_digests(
    session: Session,
    settings: Settings,
    user_ids: Sequence[str],
    *,
    compose: Compose,
    now: datetime | None = None,
    force: bool = False,
) -> PreparedDigests:
    """Record the digests of `user_ids` that are due (all of them with `force`), in one
    transaction: the outgoing emails, what they list, and everyone's next due time. Returns the
    emails to send. Raises IntegrityError when a racing forced run listed one of the messages
    first: nothing is recorded then, and running it again lists only what is left."""
    now = now or utcnow()
    with transaction(session):
        query = select(*_RECIPIENT_COLUMNS).where(User.id.in_(user_ids)).order_by(User.id)
        if force:
            # Wait for a racing run rather than skip: then the messages it listed are excluded.
            query = query.where(User.email_digest != EmailDigest.OFF).with_for_update()
        else:
            query = query.where(User.next_digest_at <= now).with_for_update(skip_locked=True)
        recipients = session.execute(query).all()
        if not recipients:
            return PreparedDigests([], 0, 0)
        facts = _gather(session, settings, recipients)
        emails, items = [], []
        for digest in facts.values():
            composed = compose(digest)
            emails.append({
                "id": digest.email_id,
                "kind": DIGEST_KIND,
                "user_id": digest.user_id,
                "conversation_id": None,
                "recipient": digest.recipient_email,
                "message_id": composed.message_id,
                "subject": composed.subject,
                "content": composed.content.decode("utf-8", "surrogateescape"),
                "status": EmailStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            })
            items += [{"user_id": digest.user_id, "message_id": m, "email_id": digest.email_id, "created_at": now}
                      for m in digest.message_ids]
        if emails:
            session.execute(insert(OutgoingEmail), emails)
            session.execute(insert(DigestItem), items)
        session.execute(
            update(User),
            [{"id": r.id, "next_digest_at": next_digest_for(r, now)} for r in recipients],
        )
        return PreparedDigests([e["id"] for e in emails], len(recipients), len(items))
