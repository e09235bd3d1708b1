"""The dispatcher: every committed event reaches each of its consumers' queues, and is marked
dispatched only once they all took it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.events import EventType
from parley.models import Event
from parley.outbox.consumers import Consumer, ConsumerRegistry, EventDelivery, WorkKind
from parley.outbox.dispatcher import ClaimedEvent, DispatchInterrupted, dispatch_pending


def _ignore(session: Session, delivery: EventDelivery) -> None:
    return None


MESSAGES = Consumer(
    name="messages", event_types=frozenset({EventType.MESSAGE_CREATED}), handle=_ignore, kind=WorkKind.MIRROR
)
EVERYTHING = Consumer(name="everything", event_types=frozenset(EventType), handle=_ignore, kind=WorkKind.WEBHOOKS)
REGISTRY = ConsumerRegistry((MESSAGES, EVERYTHING))


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_sync_db_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def sync_sessions(engine: Engine) -> sessionmaker[Session]:
    return sync_session_factory(engine)


def _write_events(sync_sessions: sessionmaker[Session], *types: EventType, conversation_id: str = "c1") -> list[int]:
    with sync_sessions() as session, session.begin():
        rows = [Event(type=t.value, conversation_id=conversation_id, payload={}, audience=["u1", "u2"]) for t in types]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _undispatched(sync_sessions: sessionmaker[Session]) -> list[int]:
    with sync_sessions() as session:
        return list(session.scalars(select(Event.id).where(Event.dispatched_at.is_(None)).order_by(Event.id)))


def test_each_event_goes_to_each_of_its_consumers_and_is_marked_dispatched(
    sync_sessions: sessionmaker[Session],
) -> None:
    created, read = _write_events(sync_sessions, EventType.MESSAGE_CREATED, EventType.MESSAGE_READ)
    handed: list[tuple[str, int]] = []

    report = dispatch_pending(
        sync_sessions, REGISTRY, lambda c, es: handed.extend((c.name, e.id) for e in es), batch_size=10, max_seconds=5
    )

    assert handed == [("messages", created), ("everything", created), ("everything", read)]
    # One task per consumer and batch, not one per event.
    assert (report.events, report.tasks, report.more_pending) == (2, 2, False)
    assert _undispatched(sync_sessions) == []
    # Nothing is handed over twice: a second run finds nothing to do.
    again = dispatch_pending(
        sync_sessions, REGISTRY, lambda c, es: handed.extend((c.name, e.id) for e in es), batch_size=10, max_seconds=5
    )
    assert again.events == 0
    assert len(handed) == 3


def test_an_event_nobody_consumes_is_marked_dispatched_without_a_task(sync_sessions: sessionmaker[Session]) -> None:
    _write_events(sync_sessions, EventType.MESSAGE_READ)
    report = dispatch_pending(
        sync_sessions, ConsumerRegistry((MESSAGES,)), lambda c, es: None, batch_size=10, max_seconds=5
    )
    assert (report.events, report.tasks) == (1, 0)
    assert _undispatched(sync_sessions) == []


def test_a_backlog_larger_than_a_batch_is_dispatched_in_order(sync_sessions: sessionmaker[Session]) -> None:
    ids = _write_events(sync_sessions, *[EventType.MESSAGE_CREATED] * 25)
    seen: list[int] = []
    report = dispatch_pending(
        sync_sessions, ConsumerRegistry((MESSAGES,)), lambda c, es: seen.extend(e.id for e in es), batch_size=10, max_seconds=5
    )
    assert seen == ids
    assert report.events == 25
    assert _undispatched(sync_sessions) == []


def test_when_the_broker_refuses_a_task_the_batch_waits_for_the_next_run(
    sync_sessions: sessionmaker[Session],
) -> None:
    first, second, third, fourth = _write_events(sync_sessions, *[EventType.MESSAGE_CREATED] * 4)
    handed: list[tuple[str, int]] = []

    def broker_fails_on_third_event(consumer: Consumer, events: Sequence[ClaimedEvent]) -> None:
        if third in [e.id for e in events] and consumer is EVERYTHING:
            raise ConnectionError("broker went away")
        handed.extend((consumer.name, e.id) for e in events)

    with pytest.raises(DispatchInterrupted) as interrupted:
        dispatch_pending(sync_sessions, REGISTRY, broker_fails_on_third_event, batch_size=2, max_seconds=5)

    # The first batch went through and is marked; the failing batch is not marked at all.
    assert interrupted.value.report.events == 2
    assert isinstance(interrupted.value.__cause__, ConnectionError)
    assert _undispatched(sync_sessions) == [third, fourth]

    dispatch_pending(sync_sessions, REGISTRY, lambda c, es: handed.extend((c.name, e.id) for e in es), batch_size=2, max_seconds=5)
    assert _undispatched(sync_sessions) == []
    # The failed batch is handed over again in full (a task of it that had reached the broker runs
    # twice, which its consumer's receipt absorbs); the first batch never is.
    assert handed.count(("messages", first)) == 1 and handed.count(("everything", second)) == 1
    assert handed.count(("messages", third)) == 2 and handed.count(("everything", third)) == 1
    assert handed.count(("everything", fourth)) == 1


def test_a_failed_flush_leaves_the_batch_undispatched(sync_sessions: sessionmaker[Session]) -> None:
    _write_events(sync_sessions, EventType.MESSAGE_CREATED)
    buffered: list[int] = []

    def flush_fails() -> None:
        raise ConnectionError("pipeline write failed")

    with pytest.raises(DispatchInterrupted):
        dispatch_pending(
            sync_sessions, REGISTRY, lambda c, es: buffered.extend(e.id for e in es), flush=flush_fails, batch_size=10, max_seconds=5
        )
    assert len(_undispatched(sync_sessions)) == 1


# SQLite runs one write transaction at a time; only PostgreSQL has side-by-side claims to test.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_side_by_side_dispatchers_never_hand_over_an_event_twice(sync_sessions: sessionmaker[Session]) -> None:
    ids = _write_events(sync_sessions, *[EventType.MESSAGE_CREATED] * 10)
    first_claimed = threading.Event()
    release_first = threading.Event()
    by_first: list[int] = []
    by_second: list[int] = []

    def slow_enqueue(consumer: Consumer, events: Sequence[ClaimedEvent]) -> None:
        by_first.extend(e.id for e in events)
        first_claimed.set()
        assert release_first.wait(10)

    registry = ConsumerRegistry((MESSAGES,))
    first = threading.Thread(
        target=dispatch_pending,
        args=(sync_sessions, registry, slow_enqueue),
        kwargs={"batch_size": 4, "max_seconds": 5},
    )
    first.start()
    try:
        assert first_claimed.wait(10)
        # The first dispatcher holds events 1-4 in its open transaction: the second skips them.
        dispatch_pending(sync_sessions, registry, lambda c, es: by_second.extend(e.id for e in es), batch_size=4, max_seconds=5)
    finally:
        release_first.set()
        first.join(10)

    assert sorted(by_first + by_second) == ids
    assert by_second == ids[4:]
    with sync_sessions() as session:
        assert session.scalar(select(func.count()).where(Event.dispatched_at.is_(None))) == 0
