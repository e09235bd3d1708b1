"""Running a consumer on a batch of events, each at most once.

One transaction per batch: the receipts (consumer, event id) are inserted first, and the consumer's
handler then runs on each event whose receipt is new, writing through the same session; receipts
and writes commit together or not at all. A redelivered task finds the receipts and runs nothing.
Two deliveries running at the same moment cannot both pass: on PostgreSQL the second insert waits
for the first transaction and then finds the rows; on SQLite write transactions run one at a time.

If a handler raises, the whole batch rolls back and the caller runs its events one at a time
(`consume_batch` on a single id), so one bad event is retried alone and never holds up the others.
After commit, the consumer's `after_commit` (its adapter's turn) runs with the events it took.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from parley.db import transaction
from parley.models import ConsumerReceipt, Event, ReceiptOutcome, utcnow
from parley.outbox.consumers import Consumer, EventDelivery

log = logging.getLogger("parley.outbox")

MAX_ERROR_CHARS = 2000


class ConsumeOutcome(enum.StrEnum):
    DONE = "done"  # the handler ran and its receipt committed
    DUPLICATE = "duplicate"  # a receipt already existed: nothing ran
    WAITING = "waiting"  # ordered consumer: the conversation's previous event is not finished yet
    MISSING = "missing"  # no such event (deleted since it was dispatched)


@dataclass
class BatchResult:
    done: list[int] = field(default_factory=list)
    duplicate: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)  # to be tried again shortly, in this order
    missing: list[int] = field(default_factory=list)

    def outcome_of(self, event_id: int) -> ConsumeOutcome:
        for outcome, ids in (
            (ConsumeOutcome.DONE, self.done),
            (ConsumeOutcome.DUPLICATE, self.duplicate),
            (ConsumeOutcome.WAITING, self.waiting),
        ):
            if event_id in ids:
                return outcome
        return ConsumeOutcome.MISSING


def consume_batch(
    sessions: sessionmaker[Session], consumer: Consumer, event_ids: Sequence[int], *, enforce_order: bool = True
) -> BatchResult:
    """Run `consumer` on each of the events that it has not run on yet, in event id order, in one
    transaction. An ordered consumer skips (as `waiting`) every event of a conversation whose
    previous event lacks its receipt. Exceptions from the handler roll everything back and
    propagate (the caller retries, one event at a time)."""
    result = BatchResult()
    taken: list[EventDelivery] = []
    with sessions() as session:
        with transaction(session):
            events = list(session.scalars(select(Event).where(Event.id.in_(set(event_ids))).order_by(Event.id)))
            found = {event.id for event in events}
            result.missing = [event_id for event_id in event_ids if event_id not in found]
            if consumer.ordered and enforce_order:
                blocked = _blocked_conversations(session, consumer, events)
                result.waiting = [e.id for e in events if e.conversation_id in blocked]
                events = [e for e in events if e.conversation_id not in blocked]
            fresh = _insert_receipts(session, consumer.name, [e.id for e in events], ReceiptOutcome.DONE)
            for event in events:
                if event.id not in fresh:
                    result.duplicate.append(event.id)
                    continue
                delivery = EventDelivery.of(event)
                consumer.handle(session, delivery)
                taken.append(delivery)
                result.done.append(event.id)
    if taken and consumer.after_commit is not None:
        try:
            consumer.after_commit(taken)
        except Exception:  # the rows are committed; the consumer's sweep picks them up
            log.exception("consumer.after_commit_failed", extra={"consumer": consumer.name, "events": len(taken)})
    return result


def consume_once(
    sessions: sessionmaker[Session], consumer: Consumer, event_id: int, *, enforce_order: bool = True
) -> ConsumeOutcome:
    """consume_batch for one event."""
    return consume_batch(sessions, consumer, [event_id], enforce_order=enforce_order).outcome_of(event_id)


def record_failure(sessions: sessionmaker[Session], consumer: Consumer, event_id: int, error: str) -> bool:
    """Record that `consumer` gave up on the event, so it is not retried by a redelivery and an
    ordered consumer's later events go ahead. False if a receipt was already there."""
    with sessions() as session, transaction(session):
        if session.get(Event, event_id) is None:
            return False
        fresh = _insert_receipts(session, consumer.name, [event_id], ReceiptOutcome.FAILED, error[:MAX_ERROR_CHARS])
        return bool(fresh)


def _insert_receipts(
    session: Session, consumer: str, event_ids: Sequence[int], outcome: ReceiptOutcome, error: str | None = None
) -> set[int]:
    """Insert the receipts that do not exist yet; returns the event ids whose receipt is new."""
    if not event_ids:
        return set()
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    statement = (
        insert(ConsumerReceipt)
        .values(
            [
                {"consumer": consumer, "event_id": event_id, "outcome": outcome, "finished_at": now, "error": error}
                for event_id in event_ids
            ]
        )
        .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        .returning(ConsumerReceipt.event_id)
    )
    return set(session.scalars(statement))


def _blocked_conversations(session: Session, consumer: Consumer, events: Sequence[Event]) -> set[str]:
    """The conversations of `events` whose event just before the batch's first one of them (of a
    type this consumer takes) has no receipt of this consumer. Checking only the immediate
    predecessor is enough: it was itself held until its own predecessor had a receipt, and so on
    back. Within the batch, a conversation's events then run in id order."""
    first_of: dict[str, int] = {}
    for event in events:
        if event.conversation_id is not None and event.conversation_id not in first_of:
            first_of[event.conversation_id] = event.id
    if not first_of:
        return set()
    types = [t.value for t in consumer.event_types]
    before_first = or_(*(and_(Event.conversation_id == c, Event.id < first) for c, first in first_of.items()))
    previous = session.execute(
        select(Event.conversation_id, func.max(Event.id))
        .where(before_first, Event.type.in_(types))
        .group_by(Event.conversation_id)
    ).all()
    last_before: dict[str, int] = {conversation: event_id for conversation, event_id in previous}
    if not last_before:
        return set()
    finished = set(
        session.scalars(
            select(ConsumerReceipt.event_id).where(
                ConsumerReceipt.consumer == consumer.name, ConsumerReceipt.event_id.in_(list(last_before.values()))
            )
        )
    )
    return {conversation for conversation, event_id in last_before.items() if event_id not in finished}
