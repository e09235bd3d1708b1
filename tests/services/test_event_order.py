"""On PostgreSQL, event ids follow commit order: a transaction that has written an event holds back
the next writer of an event until it commits, so a reader of "events after id N" (the realtime
tail, a reconnecting client) can never pass over an event that commits late."""

from __future__ import annotations

import asyncio

from sqlalchemy import select, text

from parley.config import load_settings
from parley.db import async_session_factory, create_async_db_engine, write_transaction
from parley.events import EventType, MessageRead
from parley.models import Event, utcnow
from parley.services.outbox import record_event
from tests.conftest import empty_all_tables


def _receipt() -> MessageRead:
    return MessageRead(conversation_id="c", reader_id="r", up_to_message_id=None, read_at=utcnow(), count=1)


async def test_a_later_event_writer_waits_for_the_earlier_ones_commit(postgres_url: str) -> None:
    empty_all_tables(postgres_url)
    engine = create_async_db_engine(load_settings(database_url=postgres_url))
    sessions = async_session_factory(engine)
    try:
        async with sessions() as first, sessions() as second, sessions() as observer:
            async with write_transaction(first):
                await record_event(first, EventType.MESSAGE_READ, _receipt(), conversation_id="first")

                async def write_second() -> None:
                    async with write_transaction(second):
                        await record_event(second, EventType.MESSAGE_READ, _receipt(), conversation_id="second")

                later = asyncio.create_task(write_second())
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while True:  # until the second writer is seen waiting on the lock
                    async with observer.begin():
                        waiting = await observer.scalar(
                            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
                        )
                    if waiting:
                        break
                    assert not later.done(), "the second event was written while the first was uncommitted"
                    assert loop.time() < deadline, "the second writer never waited"
                    await asyncio.sleep(0.02)
            await later
            async with observer.begin():
                rows = (await observer.execute(select(Event.conversation_id).order_by(Event.id))).scalars().all()
            assert rows == ["first", "second"]
    finally:
        await engine.dispose()
