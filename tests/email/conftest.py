from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.models import User
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.users import NewUser, create_user
from tests.email.smtp_sink import SmtpSink, running_sink

REPLY_DOMAIN = "reply.parley.test"
EMAIL_FROM = "Parley <notifications@parley.test>"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    yield from running_sink()


@pytest.fixture
def email_settings(settings: Settings, sink: SmtpSink) -> Settings:
    return settings.model_copy(
        update={
            "smtp_url": sink.url,
            "email_from": EMAIL_FROM,
            "email_reply_domain": REPLY_DOMAIN,
            "public_url": "https://parley.test",
            "email_batch_seconds": 120.0,
        }
    )


@dataclass(frozen=True)
class EmailPair:
    alice: User
    bob: User
    conversation_id: str


@pytest.fixture
def pair(sessions: sessionmaker[Session]) -> EmailPair:
    with sessions() as session:
        alice = create_user(session, NewUser(username="alice", name="Alice", email="alice@example.com"))
        bob = create_user(session, NewUser(username="bob", name="Bob", email="bob@example.com"))
        conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
    return EmailPair(alice, bob, conversation.id)
