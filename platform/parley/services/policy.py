"""Who may talk to whom (PARLEY_CONVERSATION_POLICY): the one place the rule is decided, for every
way a conversation starts or a message enters (REST, workers, Slack, email, bots, webhooks), because
they all go through `get_or_create_conversation` and `send_message`.

- `open`: anyone may.
- `relationships`: a pair may while it shares at least one active, unexpired relationship
  (managed by the host product: `put_relationship`, `delete_relationship`).
- `webhook`: the host product decides. Services do no I/O, so the adapter (the API, a worker) asks
  the webhook first (`open_questions` says what to ask, `webhooks.policy` asks, `record_answers`
  keeps the answers) and the services read the answer kept in `policy_decisions`, which is also the
  cache every process shares. No usable answer (the host could not be asked) denies, unless
  PARLEY_POLICY_FAIL_OPEN.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import reading, transaction
from parley.errors import Forbidden, Invalid, NotFound
from parley.events import ConversationPolicyChanged, EventType
from parley.ids import is_valid_id
from parley.models import Conversation, PolicyDecision, Relationship, User, utcnow
from parley.services.outbox import record_event

# A webhook answer the adapter has just written is honoured by the service for at least this long,
# even with PARLEY_POLICY_CACHE_SECONDS=0 (the adapter asks afresh every time; the service reads the
# answer it got).
ANSWER_GRACE = timedelta(seconds=30)
REASON_NO_RELATIONSHIP = "no_active_relationship"
REASON_RELATIONSHIP_ENDED = "relationship_ended"
REASON_POLICY_UNAVAILABLE = "policy_unavailable"


class Action(enum.StrEnum):
    START = "start"
    SEND = "send"


@dataclass(frozen=True)
class Verdict:
    allow: bool
    reason: str | None = None


ALLOWED = Verdict(True)


def policy_denied(reason: str | None) -> Forbidden:
    return Forbidden(
        "the conversation policy does not allow this", code="policy_denied", details={"reason": reason or "denied"}
    )


def check(session: Session, settings: Settings, action: Action, from_id: str, to_id: str) -> None:
    """Raise 403 policy_denied unless `from_id` may do `action` towards `to_id`."""
    verdict = verdicts(session, settings, action, from_id, [to_id])[to_id]
    if not verdict.allow:
        raise policy_denied(verdict.reason)


def verdicts(
    session: Session, settings: Settings | None, action: Action, from_id: str, to_ids: Sequence[str]
) -> dict[str, Verdict]:
    """May `from_id` do `action` towards each of `to_ids`? One query whatever their number (the
    inbox asks for a whole page)."""
    policy = settings.conversation_policy if settings is not None else "open"
    if policy == "open" or not to_ids:
        return {to_id: ALLOWED for to_id in to_ids}
    assert settings is not None
    now = utcnow()
    if policy == "relationships":
        states = relationship_states(session, from_id, to_ids, now)
        return {
            to_id: ALLOWED if states.get(to_id) == "active"
            else Verdict(False, REASON_RELATIONSHIP_ENDED if states.get(to_id) == "ended" else REASON_NO_RELATIONSHIP)
            for to_id in to_ids
        }
    usable_since = now - max(timedelta(seconds=settings.policy_cache_seconds), ANSWER_GRACE)
    rows = session.execute(
        select(PolicyDecision.to_id, PolicyDecision.allow, PolicyDecision.reason).where(
            PolicyDecision.action == action.value,
            PolicyDecision.from_id == from_id,
            PolicyDecision.to_id.in_(list(to_ids)),
            PolicyDecision.decided_at > usable_since,
        )
    ).all()
    found = {row.to_id: Verdict(row.allow, None if row.allow else (row.reason or "denied")) for row in rows}
    unknown = ALLOWED if settings.policy_fail_open else Verdict(False, REASON_POLICY_UNAVAILABLE)
    return {to_id: found.get(to_id, unknown) for to_id in to_ids}


def read_allowed(session: Session, settings: Settings | None, viewer_id: str, other_id: str) -> None:
    """PARLEY_POLICY_READ_AFTER_END=false: history is closed once the pair can no longer talk."""
    if settings is None or settings.conversation_policy != "relationships" or settings.policy_read_after_end:
        return
    check(session, settings, Action.SEND, viewer_id, other_id)


# --- relationships --------------------------------------------------------------------------------


def _pair(a: str, b: str) -> tuple[str, str]:
    low, high = sorted((a, b))
    return low, high


def _is_live(now: datetime) -> object:
    return and_(Relationship.active.is_(True), or_(Relationship.expires_at.is_(None), Relationship.expires_at > now))


def relationship_states(session: Session, user_id: str, others: Iterable[str], now: datetime) -> dict[str, str]:
    """For each other user: "active" (a live relationship), "ended" (only ended or expired ones) or
    absent (none ever)."""
    others = list(others)
    rows = session.execute(
        select(Relationship.user_low_id, Relationship.user_high_id, Relationship.active, Relationship.expires_at).where(
            or_(
                and_(Relationship.user_low_id == user_id, Relationship.user_high_id.in_(others)),
                and_(Relationship.user_high_id == user_id, Relationship.user_low_id.in_(others)),
            )
        )
    ).all()
    states: dict[str, str] = {}
    for row in rows:
        other = row.user_high_id if row.user_low_id == user_id else row.user_low_id
        live = row.active and (row.expires_at is None or row.expires_at > now)
        if live:
            states[other] = "active"
        else:
            states.setdefault(other, "ended")
    return states


@dataclass(frozen=True)
class RelationshipDraft:
    user_ids: tuple[str, str]
    active: bool = True
    expires_at: datetime | None = None


def put_relationship(
    session: Session, settings: Settings, reference: str, draft: RelationshipDraft
) -> tuple[Relationship, bool]:
    """Create or update the relationship `reference` (the host product's own id, e.g. a contract's).
    Returns (relationship, created). If the pair could talk before and cannot now (or the other way
    round), both members of their conversation get `conversation.policy_changed`."""
    first, second = draft.user_ids
    if first == second:
        raise Invalid("a relationship is between two different users", code="validation_error",
                      details={"fields": [{"field": "user_ids", "message": "must be two different users"}]})
    with transaction(session):
        for user_id in draft.user_ids:
            if not is_valid_id(user_id) or session.get(User, user_id) is None:
                raise NotFound("no such user", code="user_not_found", details={"user_id": user_id})
        low, high = _pair(first, second)
        existing = session.get(Relationship, reference, with_for_update=True)
        pairs = {(low, high)} | ({(existing.user_low_id, existing.user_high_id)} if existing is not None else set())
        before = {pair: _pair_can_talk(session, *pair) for pair in pairs}
        now = utcnow()
        if existing is None:
            relationship = Relationship(
                reference=reference, user_low_id=low, user_high_id=high, active=draft.active,
                expires_at=draft.expires_at, created_at=now, updated_at=now,
            )
            session.add(relationship)
        else:
            relationship = existing
            relationship.user_low_id, relationship.user_high_id = low, high
            relationship.active, relationship.expires_at, relationship.updated_at = draft.active, draft.expires_at, now
            relationship.expiry_announced_at = None
        session.flush()
        _announce_changes(session, settings, before)
    return relationship, existing is None


def delete_relationship(session: Session, settings: Settings, reference: str) -> None:
    with transaction(session):
        existing = session.get(Relationship, reference, with_for_update=True)
        if existing is None:
            raise NotFound("no such relationship", code="relationship_not_found", details={"reference": reference})
        pair = (existing.user_low_id, existing.user_high_id)
        before = {pair: _pair_can_talk(session, *pair)}
        session.execute(delete(Relationship).where(Relationship.reference == reference))
        _announce_changes(session, settings, before)


def list_relationships(session: Session, user_id: str | None) -> list[Relationship]:
    query = select(Relationship).order_by(Relationship.created_at, Relationship.reference)
    if user_id is not None:
        query = query.where(or_(Relationship.user_low_id == user_id, Relationship.user_high_id == user_id))
    with reading(session):
        return list(session.scalars(query).all())


def announce_expired_relationships(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Beat's look for relationships whose `expires_at` has passed since the last look: a pair that
    can no longer talk gets `conversation.policy_changed`, as when a relationship is ended by hand.
    Returns how many relationships were newly found expired."""
    now = now or utcnow()
    with transaction(session):
        expired = list(
            session.scalars(
                select(Relationship)
                .where(
                    Relationship.active.is_(True),
                    Relationship.expires_at.is_not(None),
                    Relationship.expires_at <= now,
                    Relationship.expiry_announced_at.is_(None),
                )
                .order_by(Relationship.reference)
                .with_for_update()
            )
        )
        pairs = {(r.user_low_id, r.user_high_id) for r in expired}
        for relationship in expired:
            relationship.expiry_announced_at = now
        session.flush()
        # They could talk until the expiry (or this pair was announced already by another ending).
        _announce_changes(session, settings, {pair: True for pair in sorted(pairs)}, now)
    return len(expired)


def _pair_can_talk(session: Session, low: str, high: str, now: datetime | None = None) -> bool:
    return relationship_states(session, low, [high], now or utcnow()).get(high) == "active"


def _announce_changes(
    session: Session, settings: Settings, before: dict[tuple[str, str], bool], now: datetime | None = None
) -> None:
    if settings.conversation_policy != "relationships":
        return
    for (low, high), could in before.items():
        can = _pair_can_talk(session, low, high, now)
        if can == could:
            continue
        conversation = session.scalar(
            select(Conversation).where(Conversation.pair_key == Conversation.pair_key_for(low, high))
        )
        if conversation is None:
            continue
        record_event(
            session,
            EventType.CONVERSATION_POLICY_CHANGED,
            ConversationPolicyChanged(
                conversation_id=conversation.id,
                can_send=can,
                cannot_send_reason=None if can else REASON_RELATIONSHIP_ENDED,
            ),
            conversation_id=conversation.id,
            audience=conversation.member_ids,
        )


# --- the webhook policy's answers ----------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    action: Action
    from_id: str
    to_id: str
    conversation_id: str | None

    def body(self) -> dict[str, object]:
        return {"action": self.action.value, "from": self.from_id, "to": self.to_id, "conversation_id": self.conversation_id}


@dataclass(frozen=True)
class Answer:
    allow: bool
    reason: str | None = None


def open_questions(
    session: Session,
    settings: Settings,
    actor: User,
    actions: Sequence[Action],
    *,
    conversation_id: str | None = None,
    other_user_id: str | None = None,
    other_username: str | None = None,
) -> list[Question]:
    """What the adapter must ask the host product before calling the service (webhook policy
    only): the questions with no answer younger than PARLEY_POLICY_CACHE_SECONDS. Unknown users or
    conversations ask nothing: the service answers those with its 404."""
    if settings.conversation_policy != "webhook":
        return []
    from parley.services.conversations import get_member_conversation
    from parley.services.users import get_user, get_user_by_username

    with reading(session):
        try:
            if conversation_id is not None:
                membership = get_member_conversation(session, conversation_id, actor.id)
                to_id = membership.other_member_id(actor.id)
            elif other_user_id is not None:
                to_id = get_user(session, other_user_id).id
                conversation_id = _conversation_of(session, actor.id, to_id)
            else:
                to_id = get_user_by_username(session, other_username or "").id
                conversation_id = _conversation_of(session, actor.id, to_id)
        except NotFound:
            return []
        if to_id == actor.id:
            return []
        fresh_since = utcnow() - timedelta(seconds=settings.policy_cache_seconds)
        answered = set(
            session.scalars(
                select(PolicyDecision.action).where(
                    PolicyDecision.from_id == actor.id,
                    PolicyDecision.to_id == to_id,
                    PolicyDecision.decided_at > fresh_since,
                )
            ).all()
        )
    return [Question(action, actor.id, to_id, conversation_id) for action in actions if action.value not in answered]


def _conversation_of(session: Session, a: str, b: str) -> str | None:
    return session.scalar(select(Conversation.id).where(Conversation.pair_key == Conversation.pair_key_for(a, b)))


def record_answers(session: Session, answers: Sequence[tuple[Question, Answer]]) -> None:
    """Keep the host product's answers (replacing older ones): the services read them, and they are
    the cache."""
    with transaction(session):
        now = utcnow()
        for question, answer in answers:
            session.merge(
                PolicyDecision(
                    action=question.action.value,
                    from_id=question.from_id,
                    to_id=question.to_id,
                    allow=answer.allow,
                    reason=(answer.reason or None) if not answer.allow else None,
                    decided_at=now,
                )
            )
