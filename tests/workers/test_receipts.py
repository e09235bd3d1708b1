"""Consumers are idempotent on (consumer, event): whatever the broker redelivers, a consumer's
database effect happens once, and an ordered consumer sees a conversation's events in order."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from parley.db import sync_session_factory
from parley.events import EventType
from parley.models import ConsumerReceipt, Event, ReceiptOutcome
from parley.outbox.consumers import Consumer, EventDelivery, WorkKind
from parley.outbox.receipts import ConsumeOutcome, consume_once, record_failure
from tests.workers.consumers import CONSUMERS, effect_rows

RECORDER, ORDERED = CONSUMERS  # test-effects (every type), test-ordered (message.created, ordered)


@pytest.fixture
def sessions_(effects_engine: Engine) -> sessionmaker[Session]:
    return sync_session_factory(effects_engine)


def _events(sessions: sessionmaker[Session], *specs: tuple[EventType, str | None]) -> list[int]:
    with sessions() as session, session.begin():
        rows = [Event(type=t.value, conversation_id=c, payload={"n": i}) for i, (t, c) in enumerate(specs)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def test_a_redelivered_event_does_nothing_twice(sessions_: sessionmaker[Session], effects_engine: Engine) -> None:
    [event_id] = _events(sessions_, (EventType.MESSAGE_CREATED, "c1"))

    assert consume_once(sessions_, RECORDER, event_id) is ConsumeOutcome.DONE
    assert consume_once(sessions_, RECORDER, event_id) is ConsumeOutcome.DUPLICATE

    assert [(e, s) for e, s, _ in effect_rows(effects_engine, "test-effects")] == [(event_id, event_id)]
    with sessions_() as session:
        receipt = session.get(ConsumerReceipt, ("test-effects", event_id))
    assert receipt is not None and receipt.outcome is ReceiptOutcome.DONE


def test_the_consumer_is_handed_the_event_as_committed(sessions_: sessionmaker[Session]) -> None:
    [event_id] = _events(sessions_, (EventType.MESSAGE_READ, "c9"))
    seen: list[EventDelivery] = []
    consumer = Consumer(
        name="seer", event_types=frozenset({EventType.MESSAGE_READ}), handle=lambda s, d: seen.append(d),
        kind=WorkKind.EMAIL,
    )
    consume_once(sessions_, consumer, event_id)
    assert seen == [
        EventDelivery(event_id=event_id, type="message.read", conversation_id="c9", payload={"n": 0}, sequence=event_id)
    ]


def test_a_failing_consumer_leaves_neither_effect_nor_receipt(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    [event_id] = _events(sessions_, (EventType.MESSAGE_CREATED, "c1"))

    def write_then_fail(session: Session, delivery: EventDelivery) -> None:
        RECORDER.handle(session, delivery)
        raise RuntimeError("the remote end said no")

    failing = Consumer(
        name="test-effects", event_types=frozenset(EventType), handle=write_then_fail, kind=WorkKind.WEBHOOKS
    )
    with pytest.raises(RuntimeError):
        consume_once(sessions_, failing, event_id)
    assert effect_rows(effects_engine, "test-effects") == []

    # The retry, on a good day, does it once.
    assert consume_once(sessions_, RECORDER, event_id) is ConsumeOutcome.DONE
    assert len(effect_rows(effects_engine, "test-effects")) == 1


def test_giving_up_is_recorded_and_stops_redeliveries(sessions_: sessionmaker[Session], effects_engine: Engine) -> None:
    [event_id] = _events(sessions_, (EventType.MESSAGE_CREATED, "c1"))
    assert record_failure(sessions_, RECORDER, event_id, "RuntimeError('no')") is True
    assert consume_once(sessions_, RECORDER, event_id) is ConsumeOutcome.DUPLICATE
    assert effect_rows(effects_engine, "test-effects") == []
    with sessions_() as session:
        receipt = session.get(ConsumerReceipt, ("test-effects", event_id))
    assert receipt is not None and (receipt.outcome, receipt.error) == (ReceiptOutcome.FAILED, "RuntimeError('no')")


def test_an_event_deleted_since_dispatch_is_reported_missing(sessions_: sessionmaker[Session]) -> None:
    assert consume_once(sessions_, RECORDER, 987_654) is ConsumeOutcome.MISSING


def test_an_ordered_consumer_waits_for_the_conversations_previous_event(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    first, _read, other_conversation, second = _events(
        sessions_,
        (EventType.MESSAGE_CREATED, "c1"),
        (EventType.MESSAGE_READ, "c1"),  # a type the consumer does not take: never waited for
        (EventType.MESSAGE_CREATED, "c2"),
        (EventType.MESSAGE_CREATED, "c1"),
    )

    assert consume_once(sessions_, ORDERED, second) is ConsumeOutcome.WAITING
    assert consume_once(sessions_, ORDERED, other_conversation) is ConsumeOutcome.DONE  # c2 is not held up
    assert consume_once(sessions_, RECORDER, second) is ConsumeOutcome.DONE  # unordered consumers never wait
    assert consume_once(sessions_, ORDERED, first) is ConsumeOutcome.DONE
    assert consume_once(sessions_, ORDERED, second) is ConsumeOutcome.DONE

    assert [e for e, _, _ in effect_rows(effects_engine, "test-ordered")] == [other_conversation, first, second]


def test_a_given_up_predecessor_does_not_hold_up_an_ordered_consumer(sessions_: sessionmaker[Session]) -> None:
    first, second = _events(sessions_, (EventType.MESSAGE_CREATED, "c1"), (EventType.MESSAGE_CREATED, "c1"))
    assert consume_once(sessions_, ORDERED, second) is ConsumeOutcome.WAITING
    record_failure(sessions_, ORDERED, first, "gave up")
    assert consume_once(sessions_, ORDERED, second) is ConsumeOutcome.DONE
    # And past the wait limit the task goes ahead regardless (enforce_order=False).
    [third] = _events(sessions_, (EventType.MESSAGE_CREATED, "c3"))
    [fourth] = _events(sessions_, (EventType.MESSAGE_CREATED, "c3"))
    assert consume_once(sessions_, ORDERED, fourth, enforce_order=False) is ConsumeOutcome.DONE
    assert third < fourth


def test_deliveries_racing_each_other_still_take_effect_once(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    event_ids = _events(sessions_, *[(EventType.MESSAGE_CREATED, f"c{n}") for n in range(20)])
    outcomes: list[ConsumeOutcome] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def deliver_all() -> None:
        start.wait()
        for event_id in event_ids:
            try:
                outcomes.append(consume_once(sessions_, RECORDER, event_id))
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=deliver_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert outcomes.count(ConsumeOutcome.DONE) == 20
    assert outcomes.count(ConsumeOutcome.DUPLICATE) == 60
    assert sorted(e for e, _, _ in effect_rows(effects_engine, "test-effects")) == event_ids
    with sessions_() as session:
        assert len(session.scalars(select(ConsumerReceipt)).all()) == 20
