"""Stopping a realtime node while its outbox tail is still opening its first database connection,
as the shortest tests (and a quick Ctrl-C) do: nothing may be left to call into the event loop
after it has closed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiosqlite
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from parley.config import load_settings
from parley.db import apply_sqlite_pragmas, async_session_factory
from parley.realtime.node import RealtimeNode

SLOW_CONNECT_SECONDS = 0.3


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException]]:
    """Exceptions that escape any thread meanwhile (aiosqlite's worker threads among them)."""
    seen: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_value)  # type: ignore[assignment,return-value]
    yield seen
    threading.excepthook = previous


def test_a_node_stopped_while_its_tail_connects_leaves_nothing_behind(
    sqlite_url: str, thread_errors: list[BaseException]
) -> None:
    path = sqlite_url.removeprefix("sqlite:///")

    def slow_sqlite_connect() -> sqlite3.Connection:
        # A loaded machine: opening the database takes a while, in aiosqlite's own thread.
        time.sleep(SLOW_CONNECT_SECONDS)
        return sqlite3.connect(path, check_same_thread=False)

    async def slow_connect() -> Any:
        return await aiosqlite.Connection(slow_sqlite_connect, iter_chunk_size=64)

    async def start_and_stop() -> None:
        engine = create_async_engine("sqlite+aiosqlite://", async_creator=slow_connect)
        apply_sqlite_pragmas(engine.sync_engine)
        node = RealtimeNode(load_settings(database_url=sqlite_url), async_session_factory(engine))
        await node.start()
        await asyncio.sleep(SLOW_CONNECT_SECONDS / 3)  # the tail is opening its connection now
        await node.stop()
        await engine.dispose()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start_and_stop())
    loop.close()
    deadline = time.monotonic() + 5 * SLOW_CONNECT_SECONDS
    while time.monotonic() < deadline and not thread_errors:
        time.sleep(0.02)
    assert thread_errors == []
