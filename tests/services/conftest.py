from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from parley.models import User
from parley.services.users import NewUser, create_user

MakeUser = Callable[[str], User]


@pytest.fixture
def make_user(sessions: sessionmaker[Session]) -> MakeUser:
    def make(username: str) -> User:
        with sessions() as session:
            return create_user(session, NewUser(username=username, name=username.title()))

    return make
