"""What each member may see of the outbox, in order: the realtime tail that every API process
follows, and the replay a reconnecting client asks for with the last event id it saw.

Event ids grow in commit order (see parley.services.outbox.EVENT_ORDER_LOCK), so "every event
after id N" never skips one that commits late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from parley.db import reading
from parley.errors import NotFound
from parley.events import LIVE_EVENT_TYPES
from parley.ids import is_valid_id
from parley.models import Block, Conversation, Event, audience_includes, utcnow

_LIVE_TYPES = sorted(t.value for t in LIVE_EVENT_TYPES)


@dataclass(frozen=True)
class FeedEvent:
    id: int
    type: str
    conversation_id: str | None
    payload: dict[str, Any]
    member_ids: tuple[str, ...]  # who hears of it: the event's audience


_TAIL = (
    select(Event.id, Event.type, Event.conversation_id, Event.payload, Event.audience)
    .where(Event.id > bindparam("after"), Event.type.in_(_LIVE_TYPES))
    .order_by(Event.id)
    .limit(bindparam("limit"))
)
_CONCERNS_USER = audience_includes(bindparam("user_id"))
_MEMBER_EVENTS = select(Event.id).where(Event.id > bindparam("since"), Event.type.in_(_LIVE_TYPES), _CONCERNS_USER)


def _feed_event(row: Any) -> FeedEvent:
    return FeedEvent(row.id, row.type, row.conversation_id, dict(row.payload), tuple(row.audience or ()))


def latest_event_id(session: Session) -> int:
    with reading(session):
        return session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0


def events_after(session: Session, after: int, limit: int) -> list[FeedEvent]:
    """Live events committed after `after`, in order, each with the users it concerns."""
    with reading(session):
        return [_feed_event(row) for row in session.execute(_TAIL, {"after": after, "limit": limit})]


def member_events_after(session: Session, user_id: str, since: int, limit: int) -> list[FeedEvent]:
    """A page of the live events that concern `user_id` after `since`, in order."""
    query = _TAIL.where(_CONCERNS_USER)
    with reading(session):
        rows = session.execute(query, {"after": since, "limit": limit, "user_id": user_id})
        return [_feed_event(row) for row in rows]


def can_replay_since(session: Session, user_id: str, since: int, *, window: timedelta, max_events: int) -> bool:
    """Whether a client that saw event `since` can be brought up to date by replay: the event must
    still be known and inside the replay window, and the client must have missed at most
    `max_events`. Otherwise it has to reload its state over REST (resync_required). `since` 0 is
    "from the beginning": replayable when the client's first event is inside the window (events are
    never removed, so none of theirs is missing)."""
    with reading(session):
        if since == 0:
            theirs = _MEMBER_EVENTS.subquery()
            first_id = session.scalar(select(func.min(theirs.c.id)), {"since": 0, "user_id": user_id})
            seen_at = (
                utcnow() if first_id is None  # nothing yet: nothing to miss
                else session.scalar(select(Event.created_at).where(Event.id == first_id))
            )
        else:
            seen_at = session.scalar(select(Event.created_at).where(Event.id == since))
        if seen_at is None or seen_at < utcnow() - window:
            return False
        missed = session.scalar(
            select(func.count()).select_from(_MEMBER_EVENTS.limit(max_events + 1).subquery()),
            {"since": since, "user_id": user_id},
        )
        return (missed or 0) <= max_events


def partners_of(session: Session, user_id: str) -> dict[str, str]:
    """conversation id -> the other member, for every conversation of `user_id`."""
    with reading(session):
        rows = session.execute(
            select(Conversation.id, Conversation.initiator_id, Conversation.recipient_id).where(
                or_(Conversation.initiator_id == user_id, Conversation.recipient_id == user_id)
            )
        )
        return {row.id: row.recipient_id if row.initiator_id == user_id else row.initiator_id for row in rows}


def require_shared_conversation(session: Session, viewer_id: str, user_id: str) -> None:
    """Presence is visible only between people who share a conversation, and not to a user who
    blocked them; to anyone else the user does not exist."""
    if user_id == viewer_id:
        return
    with reading(session):
        found = is_valid_id(user_id) and session.scalar(
            select(Conversation.id).where(Conversation.pair_key == Conversation.pair_key_for(viewer_id, user_id))
        )
        if found and session.scalar(select(Block.blocker_id).where(Block.blocker_id == viewer_id, Block.blocked_id == user_id)):
            found = None
    if not found:
        raise NotFound("no such user", details={"user_id": user_id})


def partner_in(session: Session, user_id: str, conversation_id: str) -> str | None:
    """The other member of `conversation_id` if `user_id` is a member, else None."""
    with reading(session):
        row = (
            session.execute(
                select(Conversation.initiator_id, Conversation.recipient_id).where(Conversation.id == conversation_id)
            )
        ).first()
    if row is None or user_id not in (row.initiator_id, row.recipient_id):
        return None
    return row.recipient_id if row.initiator_id == user_id else row.initiator_id
