"""Work lost after hand-over (a task that died with its worker) is handed over again: every
dispatched event that some consumer takes carries `redispatch_at`; once that passes, the sweep
hands it again to each consumer that has no receipt for it, only to those, waits twice as long
before the next look, and settles (clears `redispatch_at` of) events whose consumers all have
receipts. Real rows, real receipts; only the broker is replaced by a list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from parley.events import EventType
from parley.models import Event, utcnow
from parley.outbox.consumers import Consumer, ConsumerRegistry, EventDelivery, WorkKind
from parley.outbox.dispatcher import ClaimedEvent, DispatchReport, dispatch_pending
from parley.outbox.receipts import consume_batch, record_failure

FIRST_LOOK = 0.01  # seconds after dispatch: due almost at once
SWEEP_AFTER = 30.0  # the sweep's setting: its next looks are far enough off to be told apart


def _ignore(session: Session, delivery: EventDelivery) -> None:
    return None


MESSAGES = Consumer(
    name="messages", event_types=frozenset({EventType.MESSAGE_CREATED}), handle=_ignore, kind=WorkKind.MIRROR
)
READS = Consumer(
    name="reads", event_types=frozenset({EventType.MESSAGE_CREATED, EventType.MESSAGE_READ}), handle=_ignore,
    kind=WorkKind.WEBHOOKS,
)
REGISTRY = ConsumerRegistry((MESSAGES, READS))


class Broker:
    """Records each task handed over: (consumer, [event ids])."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, list[int]]] = []

    def enqueue(self, consumer: Consumer, events: Sequence[ClaimedEvent]) -> None:
        assert isinstance(events, list)
        self.tasks.append((consumer.name, [e.id for e in events]))

    def take(self) -> list[tuple[str, list[int]]]:
        tasks, self.tasks = self.tasks, []
        return tasks


def _write_events(sessions: sessionmaker[Session], *types: EventType) -> list[int]:
    with sessions() as session, session.begin():
        rows = [Event(type=t.value, conversation_id="c1", payload={}, audience=["u1", "u2"]) for t in types]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _state(sessions: sessionmaker[Session]) -> dict[int, tuple[datetime | None, int]]:
    """event id -> (redispatch_at, dispatch_count)."""
    with sessions() as session:
        rows = session.execute(select(Event.id, Event.redispatch_at, Event.dispatch_count).order_by(Event.id))
        return {row.id: (row.redispatch_at, row.dispatch_count) for row in rows}


def _wait_until_due(sessions: sessionmaker[Session], timeout: float = 5.0) -> None:
    """Until every pending look is in the past (a clock, polled with a deadline)."""
    deadline = utcnow() + timedelta(seconds=timeout)
    while True:
        looks = [at for at, _ in _state(sessions).values() if at is not None]
        if all(at < utcnow() for at in looks):
            return
        if utcnow() > deadline:
            pytest.fail(f"looks never became due: {looks}")


def _make_due(sessions: sessionmaker[Session], event_id: int) -> None:
    """Time passes for one event: its next look is now in the past."""
    with sessions() as session, session.begin():
        session.execute(update(Event).where(Event.id == event_id).values(redispatch_at=utcnow() - timedelta(seconds=1)))


def _sweep(sessions: sessionmaker[Session], broker: Broker) -> DispatchReport:
    return dispatch_pending(
        sessions, REGISTRY, broker.enqueue, batch_size=50, max_seconds=5,
        redispatch_after=SWEEP_AFTER, redispatch_due=True,
    )


def _look_in(look: datetime | None, started: datetime, finished: datetime, seconds: float) -> bool:
    return look is not None and started + timedelta(seconds=seconds) <= look <= finished + timedelta(seconds=seconds)


def test_due_events_go_again_only_to_consumers_without_a_receipt_and_the_wait_doubles(
    sessions: sessionmaker[Session],
) -> None:
    done, lost, read, nobodys = _write_events(
        sessions,
        EventType.MESSAGE_CREATED,  # both consumers will have receipts
        EventType.MESSAGE_CREATED,  # "messages" will have none: its task was lost
        EventType.MESSAGE_READ,  # its one consumer gave up (a receipt too)
        EventType.CONVERSATION_CREATED,  # no consumer takes it
    )
    broker = Broker()

    first = dispatch_pending(
        sessions, REGISTRY, broker.enqueue, batch_size=50, max_seconds=5, redispatch_after=FIRST_LOOK
    )
    assert (first.events, first.tasks, first.redispatched) == (4, 2, 0)
    assert broker.take() == [("messages", [done, lost]), ("reads", [done, lost, read])]
    state = _state(sessions)
    assert all(state[e][0] is not None and state[e][1] == 1 for e in (done, lost, read))
    assert state[nobodys] == (None, 1)  # nothing to look at again

    # The consumers' tasks: "reads" finished all three (one as a failure); "messages" finished
    # only the first, its other task was lost.
    assert consume_batch(sessions, READS, [done, lost]).done == [done, lost]
    assert record_failure(sessions, READS, read, "gave up") is True
    assert consume_batch(sessions, MESSAGES, [done]).done == [done]

    # Nothing is due before its time.
    assert _sweep_before_due(sessions, broker, state) is None

    _wait_until_due(sessions)
    started = utcnow()
    report = _sweep(sessions, broker)
    finished = utcnow()
    assert broker.take() == [("messages", [lost])]  # to "messages" alone, and only the lost event
    assert (report.events, report.redispatched, report.tasks) == (0, 1, 1)
    state = _state(sessions)
    assert state[done][0] is None and state[read][0] is None  # settled: every consumer has a receipt
    look, count = state[lost]
    assert count == 2
    assert _look_in(look, started, finished, 2 * SWEEP_AFTER), (look, started, finished)  # twice the wait

    # An immediate second sweep finds nothing due.
    again = _sweep(sessions, broker)
    assert broker.take() == []
    assert (again.redispatched, again.tasks) == (0, 0)
    assert _state(sessions)[lost] == (look, 2)

    # When that look comes, it goes again and the wait doubles once more.
    _make_due(sessions, lost)
    started = utcnow()
    third = _sweep(sessions, broker)
    finished = utcnow()
    assert broker.take() == [("messages", [lost])]
    assert third.redispatched == 1
    look, count = _state(sessions)[lost]
    assert count == 3
    assert _look_in(look, started, finished, 4 * SWEEP_AFTER), (look, started, finished)

    # Once the re-dispatched task ran, the next look settles the event and hands nothing over.
    assert consume_batch(sessions, MESSAGES, [lost]).done == [lost]
    _make_due(sessions, lost)
    settled = _sweep(sessions, broker)
    assert broker.take() == []
    assert settled.redispatched == 0
    assert _state(sessions)[lost] == (None, 3)
    # And settled events are never looked at again.
    assert _sweep(sessions, broker).redispatched == 0
    assert broker.take() == []


def _sweep_before_due(
    sessions: sessionmaker[Session], broker: Broker, state: dict[int, tuple[datetime | None, int]]
) -> None:
    """A sweep before the first looks are due (pushed back an hour here) re-dispatches nothing."""
    with sessions() as session, session.begin():
        session.execute(
            update(Event).where(Event.redispatch_at.is_not(None)).values(redispatch_at=utcnow() + timedelta(hours=1))
        )
    report = _sweep(sessions, broker)
    assert broker.take() == []
    assert report.redispatched == 0
    assert all(at is not None for at, _ in (_state(sessions)[e] for e in state if state[e][0] is not None))
    with sessions() as session, session.begin():
        session.execute(
            update(Event).where(Event.redispatch_at.is_not(None)).values(redispatch_at=utcnow() - timedelta(seconds=1))
        )
    return None


def test_without_redispatch_after_nothing_is_scheduled(sessions: sessionmaker[Session]) -> None:
    _write_events(sessions, EventType.MESSAGE_CREATED)
    broker = Broker()
    dispatch_pending(sessions, REGISTRY, broker.enqueue, batch_size=50, max_seconds=5)
    assert [at for at, _ in _state(sessions).values()] == [None]


def test_a_redispatch_of_many_events_is_split_into_tasks_like_a_dispatch(sessions: sessionmaker[Session]) -> None:
    ids = _write_events(sessions, *[EventType.MESSAGE_CREATED] * 150)
    broker = Broker()
    dispatch_pending(sessions, REGISTRY, broker.enqueue, batch_size=200, max_seconds=5, redispatch_after=FIRST_LOOK)
    broker.take()
    assert consume_batch(sessions, READS, ids).done == ids  # "messages" has none of them

    _wait_until_due(sessions)
    report = dispatch_pending(
        sessions, REGISTRY, broker.enqueue, batch_size=200, max_seconds=5,
        redispatch_after=SWEEP_AFTER, redispatch_due=True,
    )
    tasks = broker.take()
    assert [name for name, _ in tasks] == ["messages", "messages"]
    assert [len(events) for _, events in tasks] == [100, 50]
    assert sorted(e for _, events in tasks for e in events) == ids
    assert report.redispatched == 150
