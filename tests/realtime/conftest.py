"""Realtime tests use real WebSocket clients (aiohttp's) against the real app: in-process on both
databases, and as separate `parley serve` processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from parley.api.app import init_app
from parley.config import Settings
from tests.api.conftest import Person, make_person  # noqa: F401  (fixture)
from tests.realtime.cluster import cluster  # noqa: F401  (fixture)

FRAME_TIMEOUT = 10.0

Frame = dict[str, Any]


@pytest.fixture
def realtime_settings(settings: Settings) -> Settings:
    """Short grace and polling, so presence and worker-written events show quickly in tests."""
    return settings.model_copy(
        update={"presence_grace_seconds": 0.3, "realtime_poll_seconds": 0.2, "typing_min_interval_seconds": 60.0}
    )


@pytest.fixture
async def client(aiohttp_client: Any, realtime_settings: Settings) -> TestClient:
    return await aiohttp_client(init_app(realtime_settings))


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Any, realtime_settings: Settings) -> MakeClient:
    """An app with some settings changed, for tests that need tighter limits."""

    async def make(**overrides: Any) -> TestClient:
        return await aiohttp_client(init_app(realtime_settings.model_copy(update=overrides)))

    return make


async def connect(client: TestClient, person: Person, **params: Any) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/api/v1/ws", headers=person.auth, params=params or None)
    hello = await next_frame(ws)
    assert hello["type"] == "hello" and hello["data"]["user_id"] == person.id, hello
    return ws


async def next_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = FRAME_TIMEOUT) -> Frame:
    message = await asyncio.wait_for(ws.receive(), timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, f"expected a frame, got {message.type}: {message.data!r}"
    frame: Frame = message.json()
    return frame


async def frame_where(
    ws: aiohttp.ClientWebSocketResponse, wanted: Callable[[Frame], bool], timeout: float = FRAME_TIMEOUT
) -> Frame:
    """The next frame that satisfies `wanted`, skipping others (presence, typing) on the way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await next_frame(ws, max(0.01, deadline - loop.time()))
        if wanted(frame):
            return frame


def of_type(kind: str) -> Callable[[Frame], bool]:
    return lambda frame: frame["type"] == kind


async def frames_before_pong(ws: aiohttp.ClientWebSocketResponse) -> list[Frame]:
    """Everything queued for this connection so far: send a ping, collect until its pong. The
    server answers frames in order, so whatever it had queued comes first."""
    await ws.send_json({"type": "ping"})
    seen: list[Frame] = []
    while True:
        frame = await next_frame(ws)
        if frame["type"] == "pong":
            return seen
        seen.append(frame)
