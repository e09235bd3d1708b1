"""The API's nudge: it never delays or fails a request, whatever the broker is doing, and many
nudges fold into few publishes."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from parley.api.app import OUTBOX_NUDGER, init_app
from parley.config import Settings
from parley.models import Event
from parley.services.tokens import create_token
from parley.services.users import NewUser, create_user
from workers.nudger import OutboxNudger


async def _eventually(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_nudges_raised_during_a_publish_fold_into_one() -> None:
    release = threading.Event()
    publishes: list[int] = []

    def slow_publish() -> None:
        publishes.append(1)
        release.wait(10)

    nudger = OutboxNudger(slow_publish)
    await nudger.start()
    try:
        nudger.nudge()
        await _eventually(lambda: len(publishes) == 1, "the first publish")
        for _ in range(100):
            nudger.nudge()  # returns at once although the publish is stuck
        release.set()
        await _eventually(lambda: nudger.sent == 2, "the folded publish")
    finally:
        await nudger.stop()
    assert len(publishes) == 2


async def test_a_failed_publish_is_dropped_and_the_next_nudge_still_goes() -> None:
    calls: list[int] = []

    def flaky_publish() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("broker down")

    nudger = OutboxNudger(flaky_publish)
    await nudger.start()
    try:
        nudger.nudge()
        await _eventually(lambda: nudger.failed == 1, "the failure")
        nudger.nudge()
        await _eventually(lambda: nudger.sent == 1, "the next publish")
    finally:
        await nudger.stop()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _person(sessions: sessionmaker[Session], username: str) -> tuple[str, dict[str, str]]:
    with sessions() as session:
        user = create_user(session, NewUser(username=username, name=username))
        token = create_token(session, user.id)
    return user.id, {"Authorization": f"Bearer {token.secret}"}


async def test_with_the_broker_down_every_send_is_still_accepted(
    aiohttp_client: Any, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    client: TestClient = await aiohttp_client(init_app(down))
    _, alice = await _person(sessions, "alice")
    bob_id, _ = await _person(sessions, "bob")
    started = await client.post("/api/v1/conversations", json={"user_id": bob_id}, headers=alice)
    assert started.status == 201
    conversation_id = (await started.json())["id"]

    for n in range(5):
        sent = await client.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"content": f"m{n}"}, headers=alice
        )
        assert sent.status == 201, await sent.text()

    nudger = client.app[OUTBOX_NUDGER]
    await _eventually(lambda: nudger.failed >= 1, "a failed nudge", timeout=20)
    assert nudger.sent == 0
    # Everything waits in the outbox for the sweep.
    with sessions() as session:
        waiting = session.scalar(select(func.count()).select_from(Event).where(Event.dispatched_at.is_(None)))
    assert waiting == 6  # conversation.created and five message.created


async def test_writes_nudge_the_dispatcher_and_reads_do_not(
    aiohttp_client: Any, settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    embedded = settings.model_copy(update={"broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"})
    client: TestClient = await aiohttp_client(init_app(embedded))
    nudger = client.app[OUTBOX_NUDGER]
    _, alice = await _person(sessions, "alice")
    bob_id, _ = await _person(sessions, "bob")

    assert (await client.get("/api/v1/conversations", headers=alice)).status == 200
    refused = await client.post("/api/v1/conversations", json={"user_id": "nobody"}, headers=alice)
    assert refused.status >= 400
    assert (nudger.sent, nudger.failed) == (0, 0)

    started = await client.post("/api/v1/conversations", json={"user_id": bob_id}, headers=alice)
    assert started.status == 201
    await _eventually(lambda: nudger.sent == 1, "the nudge")
    assert nudger.failed == 0
