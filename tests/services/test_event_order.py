"""On PostgreSQL, event ids follow commit order: a transaction that has written an event holds back
the next writer of an event until it commits, so a reader of "events after id N" (the realtime
tail, a reconnecting client) can never pass over an event that commits late."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text

from parley.config import load_settings
from parley.db import create_sync_db_engine, sync_session_factory, transaction
from parley.events import EventType, MessageRead
from parley.models import Event, utcnow
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.messages import MessageDraft, send_message
from parley.services.outbox import record_event
from parley.services.users import NewUser, create_user
from tests.conftest import empty_all_tables


def _receipt() -> MessageRead:
    return MessageRead(conversation_id="c", reader_id="r", up_to_message_id=None, read_at=utcnow(), count=1)


@pytest.mark.parametrize("second_writer", ["record_event", "send_message"])
def test_a_later_event_writer_waits_for_the_earlier_ones_commit(postgres_url: str, second_writer: str) -> None:
    """Both ways events are written wait: record_event, and the one-statement text send."""
    empty_all_tables(postgres_url)
    settings = load_settings(database_url=postgres_url)
    engine = create_sync_db_engine(settings)
    sessions = sync_session_factory(engine)
    with sessions() as setup:
        alice = create_user(setup, NewUser(username="alice", name="Alice"))
        bob = create_user(setup, NewUser(username="bob", name="Bob"))
        conversation, _ = get_or_create_conversation(setup, alice, OtherUser(user_id=bob.id))
    pool = ThreadPoolExecutor(1)
    try:
        with sessions() as first, sessions() as second, sessions() as observer:
            with transaction(first):
                record_event(first, EventType.MESSAGE_READ, _receipt(), conversation_id="first", audience=["r"])

                def write_second() -> None:
                    if second_writer == "send_message":
                        send_message(second, settings, alice, conversation.id, MessageDraft(content="second"))
                        return
                    with transaction(second):
                        record_event(second, EventType.MESSAGE_READ, _receipt(), conversation_id="second", audience=["r"])

                later = pool.submit(write_second)
                deadline = time.monotonic() + 10
                while True:  # until the second writer is seen waiting on the lock
                    with observer.begin():
                        waiting = observer.scalar(
                            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
                        )
                    if waiting:
                        break
                    assert not later.done(), "the second event was written while the first was uncommitted"
                    assert time.monotonic() < deadline, "the second writer never waited"
                    time.sleep(0.02)
                # Leaving `transaction(first)` commits the first event, which lets the second go.
            later.result(timeout=10)
            with observer.begin():
                rows = observer.execute(
                    select(Event.conversation_id).where(Event.type != "conversation.created").order_by(Event.id)
                ).scalars().all()
            assert rows == ["first", "second" if second_writer == "record_event" else conversation.id]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        engine.dispose()
