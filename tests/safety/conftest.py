"""Helpers for the safety tests: an app built with chosen settings, users, sync sessions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from parley.api.app import init_app
from parley.config import Settings
from parley.models import User
from tests.webhooks.receiver import Receiver, running_receiver

AppFor = Callable[..., Awaitable[TestClient]]
POLICY_SECRET = "whsec_" + "cG9saWN5LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"  # base64 of 32 bytes


@pytest.fixture
def app_for(aiohttp_client: Any, settings: Settings) -> AppFor:
    """An API server whose settings are the test's plus `changes`."""

    async def make(**changes: Any) -> TestClient:
        return await aiohttp_client(init_app(settings.model_copy(update=changes)))

    return make


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


def load_user(sessions: sessionmaker[Session], user_id: str) -> User:
    with sessions() as session:
        user = session.get(User, user_id)
    assert user is not None
    return user


async def error_of(response: Any) -> dict[str, Any]:
    return dict((await response.json())["error"])
