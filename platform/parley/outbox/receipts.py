"""Running a consumer on an event at most once.

The receipt (consumer, event id) is inserted first, in the transaction the consumer's handler then
writes in; both commit together or not at all. A redelivered task finds the receipt and stops. Two
deliveries running at the same moment cannot both pass: on PostgreSQL the second insert waits for
the first transaction and then finds the row; on SQLite write transactions run one at a time.
"""

from __future__ import annotations

import enum

from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from parley.db import sync_write_transaction
from parley.models import ConsumerReceipt, Event, ReceiptOutcome, utcnow
from parley.outbox.consumers import Consumer, EventDelivery

MAX_ERROR_CHARS = 2000


class ConsumeOutcome(enum.StrEnum):
    DONE = "done"  # the handler ran and its receipt committed
    DUPLICATE = "duplicate"  # a receipt already existed: nothing ran
    WAITING = "waiting"  # ordered consumer: the conversation's previous event is not finished yet
    MISSING = "missing"  # no such event (deleted since it was dispatched)


def consume_once(
    sessions: sessionmaker[Session], consumer: Consumer, event_id: int, *, enforce_order: bool = True
) -> ConsumeOutcome:
    """Run `consumer` on the event unless it already has. Exceptions from the handler roll back
    its writes and the receipt, and propagate (the caller retries)."""
    with sessions() as session, sync_write_transaction(session):
        event = session.get(Event, event_id)
        if event is None:
            return ConsumeOutcome.MISSING
        if consumer.ordered and enforce_order and _previous_unfinished(session, consumer, event):
            return ConsumeOutcome.WAITING
        if not _insert_receipt(session, consumer.name, event_id, ReceiptOutcome.DONE):
            return ConsumeOutcome.DUPLICATE
        consumer.handle(session, EventDelivery.of(event))
        return ConsumeOutcome.DONE


def record_failure(sessions: sessionmaker[Session], consumer: Consumer, event_id: int, error: str) -> bool:
    """Record that `consumer` gave up on the event, so it is not retried by a redelivery and an
    ordered consumer's later events go ahead. False if a receipt was already there."""
    with sessions() as session, sync_write_transaction(session):
        if session.get(Event, event_id) is None:
            return False
        return _insert_receipt(session, consumer.name, event_id, ReceiptOutcome.FAILED, error[:MAX_ERROR_CHARS])


def _insert_receipt(
    session: Session, consumer: str, event_id: int, outcome: ReceiptOutcome, error: str | None = None
) -> bool:
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(ConsumerReceipt)
        .values(consumer=consumer, event_id=event_id, outcome=outcome, finished_at=utcnow(), error=error)
        .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        .returning(ConsumerReceipt.event_id)
    )
    return session.execute(statement).first() is not None


def _previous_unfinished(session: Session, consumer: Consumer, event: Event) -> bool:
    """Whether the conversation's previous event that this consumer takes lacks its receipt.
    Checking only the immediate predecessor is enough: it was itself held until its own
    predecessor had a receipt, and so on back."""
    if event.conversation_id is None:
        return False
    previous = session.execute(
        select(Event.id)
        .where(
            Event.conversation_id == event.conversation_id,
            Event.id < event.id,
            Event.type.in_([t.value for t in consumer.event_types]),
        )
        .order_by(Event.id.desc())
        .limit(1)
    ).scalar()
    if previous is None:
        return False
    done = session.execute(
        select(
            exists().where(ConsumerReceipt.consumer == consumer.name, ConsumerReceipt.event_id == previous)
        )
    ).scalar()
    return not done
