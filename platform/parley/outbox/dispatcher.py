"""Claiming undispatched events and handing them to their consumers, a batch at a time.

The events table is the source of truth. Events are claimed a batch at a time, and a batch is
marked dispatched in the transaction that claimed it, only after every one of its consumer tasks
was handed to the broker. Each consumer gets one task per batch (split into chunks of at most
TASK_EVENTS, a conversation's events always in one chunk, for ordered consumers' sake), not one
per event. If anything fails first (the broker refuses a task, the process dies), the whole batch
stays undispatched and the next nudge or sweep hands it over again; tasks of it that did reach the
broker then run twice, which the consumers' receipts make harmless.

A task can also be lost after it was handed over: a worker SIGKILLed while holding it leaves it
with the broker until the visibility timeout (an hour on Redis). So every dispatched event carries
`redispatch_at`; once that passes, the dispatcher hands the event again to each consumer that has
no receipt for it (receipts keep the effect exactly once), and waits twice as long before the
next look. An event whose consumers all have receipts is settled (`redispatch_at` cleared).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from parley.db import transaction
from parley.models import ConsumerReceipt, Event, UTCDateTime, utcnow
from parley.outbox.consumers import Consumer, ConsumerRegistry

TASK_EVENTS = 100  # events per consumer task
REDISPATCH_BACKOFF_MAX = 2**10  # the wait stops doubling after ten re-dispatches (about 17 hours)


@dataclass(frozen=True)
class ClaimedEvent:
    id: int
    type: str
    conversation_id: str | None


# Hands one consumer task (its events, oldest first) to the task queue; raises if the broker did
# not take it.
Enqueue = Callable[[Consumer, Sequence[ClaimedEvent]], None]


@dataclass(frozen=True)
class DispatchReport:
    events: int  # marked dispatched
    tasks: int  # enqueued
    more_pending: bool  # stopped at the time budget with a full last batch
    redispatched: int = 0  # events handed again to consumers that left no receipt


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
    redispatch_after: float | None = None,
    redispatch_due: bool = False,
) -> DispatchReport:
    """Dispatch undispatched events, oldest first, batch by batch, until none are left or
    `max_seconds` have passed. With `redispatch_after` (seconds), each event is to be looked at
    again that long after its dispatch; with `redispatch_due` (the sweep), what is due now is.
    `enqueue` may buffer; `flush` must return only once everything enqueued so far is with the
    broker (or raise)."""
    deadline = time.monotonic() + max_seconds
    events = tasks = 0
    while True:
        with sessions() as session:
            try:
                claimed, enqueued = _dispatch_batch(session, registry, enqueue, flush, batch_size, redispatch_after)
            except DispatchInterrupted as exc:
                raise DispatchInterrupted(
                    DispatchReport(events + exc.report.events, tasks + exc.report.tasks, more_pending=True)
                ) from exc.__cause__
        events += claimed
        tasks += enqueued
        if claimed < batch_size:
            break
        if time.monotonic() >= deadline:
            return DispatchReport(events, tasks, more_pending=True)
    redispatched = 0
    if redispatch_due and redispatch_after is not None:
        with sessions() as session:
            try:
                redispatched, enqueued = _redispatch_due(session, registry, enqueue, flush, batch_size, redispatch_after)
            except DispatchInterrupted as exc:
                raise DispatchInterrupted(DispatchReport(events, tasks, more_pending=True)) from exc.__cause__
        tasks += enqueued
    return DispatchReport(events, tasks, more_pending=False, redispatched=redispatched)


def consumer_tasks(consumer: Consumer, events: Sequence[ClaimedEvent]) -> list[list[ClaimedEvent]]:
    """The consumer's events split into tasks of at most TASK_EVENTS, oldest first in each. For an
    ordered consumer a conversation's events stay in one task (more than TASK_EVENTS of them make
    a larger task), so a task never waits on a sibling for the conversation's previous event."""
    if not consumer.ordered:
        return [list(events[i : i + TASK_EVENTS]) for i in range(0, len(events), TASK_EVENTS)]
    by_conversation: dict[str | None, list[ClaimedEvent]] = defaultdict(list)
    for event in events:
        by_conversation[event.conversation_id].append(event)
    chunks: list[list[ClaimedEvent]] = [[]]
    for group in by_conversation.values():
        if chunks[-1] and len(chunks[-1]) + len(group) > TASK_EVENTS:
            chunks.append([])
        chunks[-1].extend(group)
    for chunk in chunks:
        chunk.sort(key=lambda e: e.id)
    return [chunk for chunk in chunks if chunk]


def _hand_over(
    registry: ConsumerRegistry,
    enqueue: Enqueue,
    flush: Callable[[], None],
    work: dict[str, list[ClaimedEvent]],
) -> int:
    """Enqueue each consumer's events as tasks and flush; returns how many tasks."""
    tasks = 0
    try:
        for name, events in work.items():
            consumer = registry.get(name)
            assert consumer is not None
            for chunk in consumer_tasks(consumer, events):
                enqueue(consumer, chunk)
                tasks += 1
        flush()
    except Exception as exc:  # the broker's errors vary by transport; any means "not taken"
        raise DispatchInterrupted(DispatchReport(0, 0, more_pending=True)) from exc
    return tasks


def _dispatch_batch(
    session: Session,
    registry: ConsumerRegistry,
    enqueue: Enqueue,
    flush: Callable[[], None],
    limit: int,
    redispatch_after: float | None,
) -> tuple[int, int]:
    """One transaction: claim up to `limit` events, hand their tasks over, mark them dispatched.
    Returns (events, tasks)."""
    with transaction(session):
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
        work: dict[str, list[ClaimedEvent]] = defaultdict(list)
        consumed: list[int] = []
        for row in rows:
            event = ClaimedEvent(id=row.id, type=row.type, conversation_id=row.conversation_id)
            takers = registry.for_type(event.type)
            for consumer in takers:
                work[consumer.name].append(event)
            if takers:
                consumed.append(event.id)
        tasks = _hand_over(registry, enqueue, flush, work)
        if rows:
            now = utcnow()
            session.execute(
                update(Event)
                .where(Event.id.in_([row.id for row in rows]))
                .values(dispatched_at=now, dispatch_count=Event.dispatch_count + 1),
                execution_options={"synchronize_session": False},
            )
            if consumed and redispatch_after is not None:
                # Events no consumer takes are settled at once; the others are looked at again.
                session.execute(
                    update(Event)
                    .where(Event.id.in_(consumed))
                    .values(redispatch_at=now + timedelta(seconds=redispatch_after)),
                    execution_options={"synchronize_session": False},
                )
    return len(rows), tasks


def _redispatch_due(
    session: Session,
    registry: ConsumerRegistry,
    enqueue: Enqueue,
    flush: Callable[[], None],
    limit: int,
    redispatch_after: float,
) -> tuple[int, int]:
    """One transaction: take up to `limit` dispatched events whose `redispatch_at` has passed, hand
    each again to the consumers that have no receipt for it, and settle the rest. Returns (events
    handed again, tasks)."""
    now = utcnow()
    with transaction(session):
        rows = session.execute(
            select(Event.id, Event.type, Event.conversation_id, Event.dispatch_count)
            .where(Event.redispatch_at.is_not(None), Event.redispatch_at <= now)
            .order_by(Event.redispatch_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0, 0
        receipts: dict[int, set[str]] = defaultdict(set)
        for event_id, consumer in session.execute(
            select(ConsumerReceipt.event_id, ConsumerReceipt.consumer).where(
                ConsumerReceipt.event_id.in_([row.id for row in rows])
            )
        ):
            receipts[event_id].add(consumer)
        work: dict[str, list[ClaimedEvent]] = defaultdict(list)
        unsettled: dict[int, int] = {}
        for row in rows:
            missing = [c for c in registry.for_type(row.type) if c.name not in receipts[row.id]]
            for consumer in missing:
                work[consumer.name].append(ClaimedEvent(row.id, row.type, row.conversation_id))
            if missing:
                unsettled[row.id] = row.dispatch_count
        tasks = _hand_over(registry, enqueue, flush, work)
        settled = [row.id for row in rows if row.id not in unsettled]
        if settled:
            session.execute(
                update(Event).where(Event.id.in_(settled)).values(redispatch_at=None),
                execution_options={"synchronize_session": False},
            )
        if unsettled:
            session.execute(
                update(Event.__table__)
                .where(Event.__table__.c.id == bindparam("event_id", type_=Integer()))
                .values(redispatch_at=bindparam("look_again", type_=UTCDateTime()), dispatch_count=Event.__table__.c.dispatch_count + 1),
                [
                    {"event_id": event_id, "look_again": _next_look(now, redispatch_after, count)}
                    for event_id, count in unsettled.items()
                ],
            )
    return len(unsettled), tasks


def _next_look(now: datetime, redispatch_after: float, dispatch_count: int) -> datetime:
    return now + timedelta(seconds=redispatch_after * min(2**dispatch_count, REDISPATCH_BACKOFF_MAX))
