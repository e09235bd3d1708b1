"""What happens to accepted messages' follow-up work when things break: real worker and beat
processes, real Redis, real PostgreSQL (and the embedded SQLite configuration for the sweep)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from parley.api.app import init_app
from parley.models import ConsumerReceipt, Event
from parley.services.tokens import create_token
from tests.workers.conftest import (
    Process,
    Processes,
    RedisServer,
    WorkerSetup,
    _setup,
    send_messages,
    start_conversation,
    wait_for_worker,
    wait_until,
)
from tests.workers.consumers import effect_rows
from workers.celery_app import create_celery_app
from workers.tasks import DISPATCH_TASK

SessionsFor = Callable[[WorkerSetup], sessionmaker[Session]]
FLOW_TIMEOUT = 30.0


def _nudge(setup: WorkerSetup) -> None:
    app = create_celery_app(setup.settings())
    try:
        app.send_task(DISPATCH_TASK)
    finally:
        app.close()


def _events(setup: WorkerSetup, event_type: str) -> list[int]:
    with setup.engine.connect() as connection:
        return list(connection.scalars(select(Event.id).where(Event.type == event_type).order_by(Event.id)))


def _undispatched(setup: WorkerSetup) -> int:
    with setup.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Event).where(Event.dispatched_at.is_(None))) or 0)


def _wait_for_effects(
    setup: WorkerSetup, consumer: str, event_ids: list[int], processes: Processes, timeout: float = FLOW_TIMEOUT
) -> list[tuple[int, int, int]]:
    wait_until(
        lambda: {e for e, _, _ in effect_rows(setup.engine, consumer)} >= set(event_ids),
        timeout=timeout,
        what=f"{consumer} to take effect for events {event_ids}",
        log=processes.output,
    )
    return effect_rows(setup.engine, consumer)


def _assert_each_once(rows: list[tuple[int, int, int]], event_ids: list[int]) -> None:
    seen = [e for e, _, _ in rows if e in set(event_ids)]
    assert sorted(seen) == sorted(event_ids), "every event took effect exactly once"


def _assert_in_sequence(rows: list[tuple[int, int, int]], conversation_events: list[int]) -> None:
    order = [e for e, _, _ in rows if e in set(conversation_events)]
    assert order == sorted(order), "the ordered consumer saw the conversation's events in sequence"


@pytest.fixture
def postgres_private_redis(
    worker_postgres_url: str, private_redis: RedisServer, tmp_path: Path
) -> Iterator[WorkerSetup]:
    yield from _setup(worker_postgres_url, private_redis.url, tmp_path)


async def test_a_broker_outage_loses_no_event_and_dispatches_none_twice(
    postgres_private_redis: WorkerSetup,
    private_redis: RedisServer,
    processes: Processes,
    worker_sessions: SessionsFor,
    aiohttp_client: Any,
) -> None:
    setup = postgres_private_redis
    processes.worker(setup)
    processes.beat(setup)
    sessions = worker_sessions(setup)
    pair = start_conversation(sessions)
    with sessions() as session:
        token = (create_token(session, pair.alice.id)).secret
    client: TestClient = await aiohttp_client(init_app(setup.settings()))
    alice = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/conversations/{pair.conversation_id}/messages"

    before = await client.post(url, json={"content": "before the outage"}, headers=alice)
    assert before.status == 201
    _wait_for_effects(setup, "test-effects", _events(setup, "message.created"), processes)

    private_redis.stop()
    for n in range(10):
        sent = await client.post(url, json={"content": f"during the outage {n}"}, headers=alice)
        assert sent.status == 201, await sent.text()
    assert _undispatched(setup) == 10  # safe in the outbox, waiting
    private_redis.start()

    messages = _events(setup, "message.created")
    assert len(messages) == 11
    everything = [*_events(setup, "conversation.created"), *messages]
    _assert_each_once(_wait_for_effects(setup, "test-effects", everything, processes), everything)
    ordered = _wait_for_effects(setup, "test-ordered", messages, processes)
    _assert_each_once(ordered, messages)
    _assert_in_sequence(ordered, messages)
    assert _undispatched(setup) == 0


def _send_one_held_message(setup: WorkerSetup, sessions: sessionmaker[Session], processes: Processes) -> int:
    """Send one message whose test-effects consumer will hold (wait) once it starts; its event id.
    The conversation's own event is consumed first: a consumer takes events in batches, and the
    hold must catch the message's event, not its predecessor's."""
    pair = start_conversation(sessions)
    _nudge(setup)
    _wait_for_effects(setup, "test-effects", _events(setup, "conversation.created"), processes)
    (setup.control_dir / "hold").write_text("test-effects")
    send_messages(sessions, setup.settings(), pair, 1)
    [event_id] = _events(setup, "message.created")
    _nudge(setup)
    return event_id


def _attempt_pids(setup: WorkerSetup, event_id: int) -> list[int]:
    """The worker processes that started the test-effects consumer on the event, in order."""
    return [pid for c, e, pid in setup.attempts() if (c, e) == ("test-effects", event_id)]


def _wait_for_first_attempt(setup: WorkerSetup, event_id: int, worker: Process) -> int:
    pids = wait_until(
        lambda: _attempt_pids(setup, event_id), timeout=FLOW_TIMEOUT, what="the consumer to start", log=worker.output
    )
    assert isinstance(pids, list)
    return int(pids[0])


async def test_a_worker_process_killed_mid_task_runs_it_again_and_it_takes_effect_once(
    postgres_redis: WorkerSetup, processes: Processes, worker_sessions: SessionsFor
) -> None:
    setup = postgres_redis
    worker = processes.worker(setup)
    event_id = _send_one_held_message(setup, worker_sessions(setup), processes)

    first_pid = _wait_for_first_attempt(setup, event_id, worker)
    os.kill(first_pid, signal.SIGKILL)
    (setup.control_dir / "hold").unlink()

    rows = _wait_for_effects(setup, "test-effects", [event_id], processes)
    _assert_each_once(rows, [event_id])
    attempts = _attempt_pids(setup, event_id)
    assert len(attempts) == 2 and attempts[0] == first_pid and attempts[1] != first_pid
    assert [pid for e, _, pid in rows if e == event_id] == [attempts[1]]
    assert worker.popen.poll() is None, "the worker itself carried on"


async def test_a_whole_worker_killed_mid_task_hands_it_to_the_next_worker(
    postgres_redis: WorkerSetup, processes: Processes, worker_sessions: SessionsFor
) -> None:
    setup = postgres_redis
    visibility = {"PARLEY_BROKER_VISIBILITY_TIMEOUT": "10"}  # Redis gives an unacknowledged task away after 10 s
    first = processes.worker(setup, env=visibility)
    event_id = _send_one_held_message(setup, worker_sessions(setup), processes)

    _wait_for_first_attempt(setup, event_id, first)
    first.kill_group()  # SIGKILL the worker and its pool at once: nobody acknowledges anything
    (setup.control_dir / "hold").unlink()
    processes.worker(setup, env=visibility)

    rows = _wait_for_effects(setup, "test-effects", [event_id], processes)
    _assert_each_once(rows, [event_id])
    attempts = _attempt_pids(setup, event_id)
    assert len(attempts) == 2 and attempts[0] != attempts[1]


@pytest.mark.timeout(240)
async def test_work_lost_with_a_killed_worker_is_dispatched_again_within_two_minutes(
    postgres_redis: WorkerSetup, processes: Processes, worker_sessions: SessionsFor
) -> None:
    """Redis keeps a task that a SIGKILLed worker held for the whole visibility timeout (an hour
    here, as shipped). The sweep re-dispatches an event whose consumer left no receipt
    PARLEY_OUTBOX_REDISPATCH_SECONDS (60, as shipped) after dispatch: the effect happens once, in
    about a minute, not an hour."""
    setup = postgres_redis
    hour = {"PARLEY_BROKER_VISIBILITY_TIMEOUT": "3600"}
    first = processes.worker(setup, env=hour)
    processes.beat(setup)
    event_id = _send_one_held_message(setup, worker_sessions(setup), processes)

    _wait_for_first_attempt(setup, event_id, first)
    killed_at = time.monotonic()
    first.kill_group()  # nobody acknowledges the task: Redis would hand it out again in an hour
    (setup.control_dir / "hold").unlink()
    processes.worker(setup, env=hour)

    rows = _wait_for_effects(setup, "test-effects", [event_id], processes, timeout=150)
    assert time.monotonic() - killed_at < 120, "the lost work took more than two minutes to come back"
    _assert_each_once(rows, [event_id])
    attempts = _attempt_pids(setup, event_id)
    assert len(attempts) == 2 and attempts[0] != attempts[1]


@pytest.mark.parametrize("configuration", ["postgres_redis", "sqlite_embedded"])
async def test_events_committed_without_a_nudge_are_dispatched_by_the_sweep(
    configuration: str, request: pytest.FixtureRequest, processes: Processes, worker_sessions: SessionsFor
) -> None:
    setup: WorkerSetup = request.getfixturevalue(configuration)
    worker = processes.worker(setup)
    processes.beat(setup)
    wait_for_worker(worker)
    sessions = worker_sessions(setup)
    pair = start_conversation(sessions)
    # The API would have died between its commit and its nudge: nothing but the sweep knows.
    send_messages(sessions, setup.settings(), pair, 12)

    messages = _events(setup, "message.created")
    rows = _wait_for_effects(setup, "test-effects", messages, processes)
    _assert_each_once(rows, messages)
    ordered = _wait_for_effects(setup, "test-ordered", messages, processes)
    _assert_each_once(ordered, messages)
    _assert_in_sequence(ordered, messages)
    with setup.engine.connect() as connection:
        # The test consumers' receipts: the built-in consumers (webhooks, ...) take these events too.
        receipts = connection.scalar(
            select(func.count()).select_from(ConsumerReceipt).where(ConsumerReceipt.consumer.like("test-%"))
        )
    assert receipts == 2 * len(messages) + 1  # both consumers per message, and conversation.created
