from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from parley.errors import Invalid, NotFound
from parley.models import Conversation, ConversationMember, Event
from parley.services.conversations import OtherUser, get_or_create_conversation
from tests.services.conftest import MakeUser


async def _count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def test_both_users_get_the_same_conversation(sessions, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    with sessions() as session:
        first, created = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
    with sessions() as session:
        again, created_again = get_or_create_conversation(session, bob, OtherUser(username="ALICE"))

    assert created and not created_again
    assert again.id == first.id
    assert (first.initiator_id, first.recipient_id) == (alice.id, bob.id)
    assert await _count(sessions, ConversationMember) == 2
    with sessions() as session:
        events = (session.execute(select(Event))).scalars().all()
    assert [e.type for e in events] == ["conversation.created"]
    assert events[0].conversation_id == first.id
    assert events[0].payload["conversation"]["initiator"]["username"] == "alice"


async def test_twenty_concurrent_calls_for_one_pair_make_one_conversation(sessions, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")

    async def open_from(user, other_id):
        with sessions() as session:
            conversation, created = get_or_create_conversation(session, user, OtherUser(user_id=other_id))
            return conversation.id, created

    results = await asyncio.gather(
        *(open_from(alice, bob.id) if i % 2 else open_from(bob, alice.id) for i in range(20))
    )

    assert len({conversation_id for conversation_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await _count(sessions, Conversation) == 1
    assert await _count(sessions, Event) == 1


async def test_messaging_yourself_is_refused(sessions, make_user: MakeUser) -> None:
    alice = make_user("alice")
    with sessions() as session:
        with pytest.raises(Invalid) as refused:
            get_or_create_conversation(session, alice, OtherUser(user_id=alice.id))
    assert refused.value.code == "cannot_message_self"
    assert await _count(sessions, Conversation) == 0


@pytest.mark.parametrize("other", [OtherUser(user_id="01ARZ3NDEKTSV4RRFFQ69G5FAV"), OtherUser(username="nobody"),
                                   OtherUser(user_id="not-an-id")])
async def test_an_unknown_user_is_a_clear_not_found(sessions, make_user: MakeUser, other: OtherUser) -> None:
    alice = make_user("alice")
    with sessions() as session:
        with pytest.raises(NotFound) as missing:
            get_or_create_conversation(session, alice, other)
    assert missing.value.code == "user_not_found"
    assert await _count(sessions, Event) == 0
