"""Separate `parley serve` processes sharing one PostgreSQL database and one Redis: what a load
balancer puts in front of several API nodes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.api.conftest import ADMIN, Person
from tests.conftest import ADMIN_TOKEN, empty_all_tables
from tests.workers.conftest import REPO_ROOT, Process, Processes, RedisServer, free_port

READY_TIMEOUT = 30.0


async def eventually(check: Any, *, timeout: float, what: str, log: Any = None) -> Any:
    """Await `check()` until it returns something truthy; fail naming `what` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() >= deadline:
            details = f"\n--- process output ---\n{log()[-6000:]}" if log is not None else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}{details}")
        await asyncio.sleep(0.05)


@dataclass
class Node:
    process: Process
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    database_url: str
    redis: RedisServer
    processes: Processes
    http: aiohttp.ClientSession
    nodes: list[Node] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            PARLEY_DATABASE_URL=self.database_url,
            PARLEY_REDIS_URL=self.redis.url,
            PARLEY_BROKER_URL=self.redis.url,  # nudges land there; no worker is needed here
            PARLEY_ADMIN_TOKEN=ADMIN_TOKEN,
            PARLEY_PRESENCE_TTL_SECONDS="2",
            PARLEY_PRESENCE_GRACE_SECONDS="0.3",
            PARLEY_REALTIME_POLL_SECONDS="0.2",
            PARLEY_TYPING_MIN_INTERVAL_SECONDS="0",
            PARLEY_LOG_LEVEL="INFO",
            PYTHONPATH=str(REPO_ROOT),
            PYTHONUNBUFFERED="1",
        )
        return env

    async def start_node(self, *extra: str) -> Node:
        port = free_port()
        argv = [sys.executable, "-m", "parley.cli", "serve", "--no-migrate", "--port", str(port), *extra]
        node = Node(self.processes.start(f"api-{len(self.nodes)}", argv, self.env()), port)
        self.nodes.append(node)

        async def ready() -> bool:
            try:
                async with self.http.get(f"{node.base}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=READY_TIMEOUT, what=f"node on port {port}", log=self.processes.output)
        return node

    async def person(self, node: Node, username: str) -> Person:
        async with self.http.post(f"{node.base}/api/v1/users", json={"username": username, "name": username}, headers=ADMIN) as r:
            assert r.status == 201, await r.text()
            user = await r.json()
        async with self.http.post(f"{node.base}/api/v1/users/{user['id']}/tokens", headers=ADMIN) as r:
            assert r.status == 201, await r.text()
            token = await r.json()
        return Person(id=user["id"], username=username, token=token["token"], token_id=token["id"])

    async def call(self, node: Node, method: str, path: str, person: Person, **kwargs: Any) -> dict[str, Any]:
        async with self.http.request(method, f"{node.base}{path}", headers=person.auth, **kwargs) as response:
            assert response.status < 300, await response.text()
            return dict(await response.json()) if response.status != 204 else {}

    async def connect(self, node: Node, person: Person, **params: Any) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(f"{node.base}/api/v1/ws", headers=person.auth, params=params or None)
        hello = (await ws.receive_json(timeout=10))
        assert hello["type"] == "hello", hello
        return ws

    async def alice_and_bob(self, node: Node) -> tuple[Person, Person, dict[str, Any]]:
        """Two people provisioned through `node`, and their conversation."""
        alice, bob = await self.person(node, "alice"), await self.person(node, "bob")
        conversation = await self.call(node, "POST", "/api/v1/conversations", alice, json={"user_id": bob.id})
        return alice, bob, conversation


C = TypeVar("C", bound=Cluster)


@asynccontextmanager
async def running_cluster(postgres_url: str, tmp_path: Path, kind: type[C]) -> AsyncIterator[C]:
    """The session's PostgreSQL test database, emptied, and a Redis of this test's own, for a
    cluster of `kind`; every process it started is stopped afterwards."""
    empty_all_tables(postgres_url)
    redis = RedisServer(tmp_path)
    redis.start()
    processes = Processes(tmp_path)
    async with aiohttp.ClientSession() as http:
        try:
            yield kind(postgres_url, redis, processes, http)
        finally:
            processes.stop_all()
            redis.stop()


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(postgres_url, tmp_path, Cluster) as started:
        yield started
