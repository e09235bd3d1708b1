from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.models import User
from parley.services.users import NewUser, create_user

MakeUser = Callable[[str], Awaitable[User]]


@pytest.fixture
def make_user(sessions: async_sessionmaker[AsyncSession]) -> MakeUser:
    async def make(username: str) -> User:
        async with sessions() as session:
            return await create_user(session, NewUser(username=username, name=username.title()))

    return make
