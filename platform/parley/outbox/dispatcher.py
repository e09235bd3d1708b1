"""Claiming undispatched events and handing them to their consumers.

The events table is the source of truth. Events are claimed a batch at a time, and a batch is
marked dispatched in the transaction that claimed it, only after every one of its consumer tasks
was handed to the broker. If anything fails first (the broker refuses a task, the process dies),
the whole batch stays undispatched and the next nudge or sweep hands it over again; tasks of it
that did reach the broker then run twice, which the consumers' receipts make harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from parley.db import sync_write_transaction
from parley.models import Event, utcnow
from parley.outbox.consumers import Consumer, ConsumerRegistry


@dataclass(frozen=True)
class ClaimedEvent:
    id: int
    type: str
    conversation_id: str | None


# Hands one (consumer, event) pair to the task queue; raises if the broker did not take it.
Enqueue = Callable[[Consumer, ClaimedEvent], None]


@dataclass(frozen=True)
class DispatchReport:
    events: int  # marked dispatched
    tasks: int  # enqueued
    more_pending: bool  # stopped at the time budget with a full last batch


class DispatchInterrupted(Exception):
    """Handing over failed part-way. Batches handed over in full before the failure were marked
    dispatched; the failing batch and the rest wait for the next nudge or sweep."""

    def __init__(self, report: DispatchReport) -> None:
        super().__init__(f"enqueueing failed after {report.events} events and {report.tasks} tasks")
        self.report = report


def dispatch_pending(
    sessions: sessionmaker[Session],
    registry: ConsumerRegistry,
    enqueue: Enqueue,
    *,
    flush: Callable[[], None] = lambda: None,
    batch_size: int,
    max_seconds: float,
) -> DispatchReport:
    """Dispatch undispatched events, oldest first, batch by batch, until none are left or
    `max_seconds` have passed. `enqueue` may buffer; `flush` must return only once everything
    enqueued so far is with the broker (or raise)."""
    deadline = time.monotonic() + max_seconds
    events = tasks = 0
    while True:
        with sessions() as session:
            try:
                claimed, enqueued = _dispatch_batch(session, registry, enqueue, flush, batch_size)
            except DispatchInterrupted as exc:
                raise DispatchInterrupted(
                    DispatchReport(events + exc.report.events, tasks + exc.report.tasks, more_pending=True)
                ) from exc.__cause__
        events += claimed
        tasks += enqueued
        if claimed < batch_size:
            return DispatchReport(events, tasks, more_pending=False)
        if time.monotonic() >= deadline:
            return DispatchReport(events, tasks, more_pending=True)


def _dispatch_batch(
    session: Session, registry: ConsumerRegistry, enqueue: Enqueue, flush: Callable[[], None], limit: int
) -> tuple[int, int]:
    """One transaction: claim up to `limit` events, hand their tasks over, mark them dispatched.
    Returns (events, tasks)."""
    with sync_write_transaction(session):
        # SKIP LOCKED: dispatchers running side by side (a nudge and a sweep, several workers)
        # each take different events instead of queueing behind one another. SQLite has no row
        # locks (the statement renders without the clause); its write transactions run one at a time.
        rows = session.execute(
            select(Event.id, Event.type, Event.conversation_id)
            .where(Event.dispatched_at.is_(None))
            .order_by(Event.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        tasks = 0
        try:
            for row in rows:
                event = ClaimedEvent(id=row.id, type=row.type, conversation_id=row.conversation_id)
                for consumer in registry.for_type(event.type):
                    enqueue(consumer, event)
                    tasks += 1
            flush()
        except Exception as exc:  # the broker's errors vary by transport; any means "not taken"
            raise DispatchInterrupted(DispatchReport(0, 0, more_pending=True)) from exc
        if rows:
            session.execute(
                update(Event).where(Event.id.in_([row.id for row in rows])).values(dispatched_at=utcnow()),
                execution_options={"synchronize_session": False},
            )
    return len(rows), tasks
