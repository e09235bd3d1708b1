"""Consumers take events in batches: `consume_batch` runs a consumer on several events in one
transaction, each at most once; an ordered consumer holds back a conversation whose previous event
is unfinished; a failing handler rolls back the whole batch; `after_commit` sees what was taken.
And the dispatcher's split of a consumer's events into tasks (`consumer_tasks`)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.db import sync_session_factory
from parley.events import EventType, MessageCreated
from parley.models import ConsumerReceipt, Event
from parley.outbox.consumers import Consumer, EventDelivery, WorkKind
from parley.outbox.dispatcher import TASK_EVENTS, ClaimedEvent, consumer_tasks
from parley.outbox.receipts import consume_batch
from tests.workers.conftest import send_messages, start_conversation
from tests.workers.consumers import CONSUMERS, effect_rows

RECORDER, ORDERED = CONSUMERS  # test-effects (every type), test-ordered (message.created, ordered)


@pytest.fixture
def sessions_(effects_engine: Engine) -> sessionmaker[Session]:
    return sync_session_factory(effects_engine)


def _events(sessions: sessionmaker[Session], *specs: tuple[EventType, str | None]) -> list[int]:
    with sessions() as session, session.begin():
        rows = [
            Event(type=t.value, conversation_id=c, payload={"n": i}, audience=["u1"]) for i, (t, c) in enumerate(specs)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _receipts(sessions: sessionmaker[Session], consumer: str) -> list[int]:
    with sessions() as session:
        return list(
            session.scalars(
                select(ConsumerReceipt.event_id).where(ConsumerReceipt.consumer == consumer).order_by(ConsumerReceipt.event_id)
            )
        )


def _effects(engine: Engine, consumer: str) -> list[int]:
    return [event_id for event_id, _, _ in effect_rows(engine, consumer)]


MESSAGE = EventType.MESSAGE_CREATED


# --- at most once --------------------------------------------------------------------------------


def test_a_batch_runs_each_new_event_once_and_reports_duplicates_when_run_again(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    first = _events(sessions_, (MESSAGE, "c1"), (EventType.MESSAGE_READ, "c2"), (MESSAGE, None))

    result = consume_batch(sessions_, RECORDER, first)
    assert (result.done, result.duplicate, result.waiting, result.missing) == (first, [], [], [])
    assert _effects(effects_engine, "test-effects") == first

    [later] = _events(sessions_, (MESSAGE, "c1"))
    unknown = later + 1000
    again = consume_batch(sessions_, RECORDER, [*first, later, unknown])
    assert (again.done, again.duplicate, again.waiting, again.missing) == ([later], first, [], [unknown])
    # Every event took effect exactly once, and has one receipt.
    assert _effects(effects_engine, "test-effects") == [*first, later]
    assert _receipts(sessions_, "test-effects") == [*first, later]


def test_a_batch_given_events_out_of_order_runs_them_in_event_order(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    ids = _events(sessions_, (MESSAGE, "c1"), (MESSAGE, "c1"), (MESSAGE, "c1"))
    result = consume_batch(sessions_, ORDERED, list(reversed(ids)))
    assert result.done == ids
    assert _effects(effects_engine, "test-ordered") == ids


# --- ordered consumers ---------------------------------------------------------------------------


def test_an_ordered_batch_holds_back_a_conversation_whose_predecessor_lacks_a_receipt(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    before, a1, _read, b1, a2, b2 = _events(
        sessions_,
        (MESSAGE, "a"),  # not in the batch, and not finished: conversation a must wait
        (MESSAGE, "a"),
        (EventType.MESSAGE_READ, "a"),  # a type the consumer does not take
        (MESSAGE, "b"),  # conversation b has no unfinished predecessor: it runs
        (MESSAGE, "a"),
        (MESSAGE, "b"),
    )

    result = consume_batch(sessions_, ORDERED, [a1, b1, a2, b2])
    assert (result.done, result.waiting, result.duplicate) == ([b1, b2], [a1, a2], [])
    assert _effects(effects_engine, "test-ordered") == [b1, b2]
    assert _receipts(sessions_, "test-ordered") == [b1, b2]  # the held-back events have none

    # Once the predecessor is done, the held-back events run, in order, once.
    assert consume_batch(sessions_, ORDERED, [before]).done == [before]
    retry = consume_batch(sessions_, ORDERED, [a1, a2, b1])
    assert (retry.done, retry.waiting, retry.duplicate) == ([a1, a2], [], [b1])
    assert _effects(effects_engine, "test-ordered") == [b1, b2, before, a1, a2]


def test_a_predecessor_in_the_same_batch_does_not_hold_its_successor_back(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    ids = _events(sessions_, (MESSAGE, "a"), (MESSAGE, "a"), (MESSAGE, "b"), (MESSAGE, "a"))
    result = consume_batch(sessions_, ORDERED, ids)
    assert (result.done, result.waiting) == (ids, [])


def test_an_unordered_consumer_or_enforce_order_false_never_holds_back(
    sessions_: sessionmaker[Session], effects_engine: Engine
) -> None:
    _before, after = _events(sessions_, (MESSAGE, "a"), (MESSAGE, "a"))
    assert consume_batch(sessions_, RECORDER, [after]).done == [after]
    assert consume_batch(sessions_, ORDERED, [after]).waiting == [after]
    assert consume_batch(sessions_, ORDERED, [after], enforce_order=False).done == [after]
    assert _effects(effects_engine, "test-ordered") == [after]


# --- failure -------------------------------------------------------------------------------------


def test_a_handler_raising_rolls_back_the_whole_batch(sessions_: sessionmaker[Session], effects_engine: Engine) -> None:
    ids = _events(sessions_, (MESSAGE, "c1"), (MESSAGE, "c2"), (MESSAGE, "c3"))
    bad = ids[1]
    after: list[list[int]] = []

    def write_then_fail_on_one(session: Session, delivery: EventDelivery) -> None:
        RECORDER.handle(session, delivery)  # the effect row, in the batch's transaction
        if delivery.event_id == bad:
            raise RuntimeError("this one is poisoned")

    flaky = Consumer(
        name="test-effects", event_types=frozenset(EventType), handle=write_then_fail_on_one, kind=WorkKind.WEBHOOKS,
        after_commit=lambda deliveries: after.append([d.event_id for d in deliveries]),
    )
    with pytest.raises(RuntimeError, match="poisoned"):
        consume_batch(sessions_, flaky, ids)

    assert _effects(effects_engine, "test-effects") == []  # not even the first event's write
    assert _receipts(sessions_, "test-effects") == []
    assert after == []  # nothing committed, nothing to follow up

    # Retried one at a time (as the worker does), the good ones go through and only the bad one fails.
    for event_id in ids:
        if event_id == bad:
            with pytest.raises(RuntimeError):
                consume_batch(sessions_, flaky, [event_id])
        else:
            assert consume_batch(sessions_, flaky, [event_id]).done == [event_id]
    assert _effects(effects_engine, "test-effects") == [ids[0], ids[2]]
    assert _receipts(sessions_, "test-effects") == [ids[0], ids[2]]


# --- after_commit --------------------------------------------------------------------------------


def test_after_commit_runs_once_with_the_taken_deliveries_after_the_receipts_committed(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    pair = start_conversation(sessions)
    sent = send_messages(sessions, settings, pair, 3)
    with sessions() as session:
        created = list(
            session.scalars(select(Event.id).where(Event.type == MESSAGE.value).order_by(Event.id))
        )
    calls: list[list[EventDelivery]] = []
    receipts_seen: list[list[int]] = []

    def follow_up(deliveries: Sequence[EventDelivery]) -> None:
        calls.append(list(deliveries))
        receipts_seen.append(_receipts(sessions, "follower"))  # committed already, from another session

    follower = Consumer(
        name="follower", event_types=frozenset({MESSAGE}), handle=lambda s, d: None, kind=WorkKind.EMAIL,
        after_commit=follow_up, ordered=True,
    )

    first = consume_batch(sessions, follower, created[:2])
    assert first.done == created[:2]
    [taken] = calls
    assert [d.event_id for d in taken] == created[:2]
    assert receipts_seen == [created[:2]]
    for delivery, message_id in zip(taken, sent, strict=False):
        assert delivery.audience == tuple(sorted([pair.alice.id, pair.bob.id]))
        assert isinstance(delivery.data, MessageCreated)
        assert delivery.data.message.id == message_id
        assert delivery.data.message.sender_id == pair.alice.id

    # A redelivery of the same events takes nothing: no second call.
    assert consume_batch(sessions, follower, created[:2]).duplicate == created[:2]
    assert len(calls) == 1

    # A batch with old and new events hands over only the new one.
    consume_batch(sessions, follower, created)
    assert [[d.event_id for d in call] for call in calls] == [created[:2], [created[2]]]
    assert calls[1][0].data.message.id == sent[2]  # type: ignore[attr-defined]


def test_after_commit_is_not_called_for_events_held_back(sessions_: sessionmaker[Session]) -> None:
    _before, held = _events(sessions_, (MESSAGE, "a"), (MESSAGE, "a"))
    calls: list[list[int]] = []
    follower = Consumer(
        name="follower", event_types=frozenset({MESSAGE}), handle=lambda s, d: None, kind=WorkKind.EMAIL,
        after_commit=lambda ds: calls.append([d.event_id for d in ds]), ordered=True,
    )
    assert consume_batch(sessions_, follower, [held]).waiting == [held]
    assert calls == []


# --- tasks ----------------------------------------------------------------------------------------


def _claimed(*conversations: str | None) -> list[ClaimedEvent]:
    return [ClaimedEvent(id=n + 1, type=MESSAGE.value, conversation_id=c) for n, c in enumerate(conversations)]


def test_an_unordered_consumers_events_are_split_into_tasks_of_at_most_a_hundred() -> None:
    events = _claimed(*(f"c{n % 7}" for n in range(2 * TASK_EVENTS + 50)))
    tasks = consumer_tasks(RECORDER, events)
    assert [len(task) for task in tasks] == [TASK_EVENTS, TASK_EVENTS, 50]
    assert [e for task in tasks for e in task] == events  # oldest first, nothing lost or repeated
    assert consumer_tasks(RECORDER, events[:TASK_EVENTS]) == [events[:TASK_EVENTS]]
    assert consumer_tasks(RECORDER, []) == []


def test_an_ordered_consumers_tasks_never_split_a_conversation() -> None:
    # Interleaved conversations: a (60 events), b (60), c (30), d (150: more than a task holds).
    names = ["a"] * 60 + ["b"] * 60 + ["c"] * 30 + ["d"] * 150
    interleaved = sorted(names, key=lambda name: (names[: names.index(name)].count(name), name))
    events = _claimed(*interleaved, None, None)
    tasks = consumer_tasks(ORDERED, events)

    assert sorted(e.id for task in tasks for e in task) == [e.id for e in events]  # each event once
    for conversation in ("a", "b", "c", "d"):
        holding = [i for i, task in enumerate(tasks) if any(e.conversation_id == conversation for e in task)]
        assert len(holding) == 1, f"conversation {conversation} is split over tasks {holding}"
    for task in tasks:
        assert [e.id for e in task] == sorted(e.id for e in task)  # oldest first
        if len(task) > TASK_EVENTS:  # only a conversation too large for one task makes one larger
            assert {e.conversation_id for e in task} == {"d"}
    assert len(tasks) > 1
