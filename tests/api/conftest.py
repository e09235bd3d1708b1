"""API tests drive the real aiohttp app over real HTTP (pytest-aiohttp's test server)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from parley.api.app import init_app
from parley.config import Settings
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass(frozen=True)
class Person:
    id: str
    username: str
    token: str
    token_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MakePerson = Callable[..., Awaitable[Person]]


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(init_app(settings))


@pytest.fixture
def make_person(client: TestClient) -> MakePerson:
    """Provision a user and mint their token through the admin API, as a host product would."""

    async def make(username: str, **fields: Any) -> Person:
        return await provision(client, username, **fields)

    return make


async def provision(client: TestClient, username: str, **fields: Any) -> Person:
    """A user and their token, made through the admin API of the app `client` talks to."""
    body = {"username": username, "name": username.title(), **fields}
    created = await client.post("/api/v1/users", json=body, headers=ADMIN)
    assert created.status == 201, await created.text()
    user = await created.json()
    minted = await client.post(f"/api/v1/users/{user['id']}/tokens", headers=ADMIN)
    assert minted.status == 201, await minted.text()
    token = await minted.json()
    return Person(id=user["id"], username=username, token=token["token"], token_id=token["id"])


async def start_conversation(client: TestClient, sender: Person, recipient: Person) -> dict[str, Any]:
    response = await client.post("/api/v1/conversations", json={"user_id": recipient.id}, headers=sender.auth)
    assert response.status in (200, 201), await response.text()
    return await response.json()


async def send(client: TestClient, sender: Person, conversation_id: str, content: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": content, **extra}, headers=sender.auth
    )
    assert response.status == 201, await response.text()
    return await response.json()
