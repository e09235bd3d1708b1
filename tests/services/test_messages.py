from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from parley.config import Settings
from parley.errors import Conflict, NotFound
from parley.models import Event, Message
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.messages import MessageDraft, send_message
from tests.services.conftest import MakeUser


async def test_a_send_writes_the_message_and_its_event_together(sessions, settings: Settings, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    with sessions() as session:
        conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
    with sessions() as session:
        message, created = send_message(session, settings, alice, conversation.id, MessageDraft(content="hi"))

    assert created
    with sessions() as session:
        events = (session.execute(select(Event).order_by(Event.id))).scalars().all()
        stored = session.get(Message, message.id)
    assert stored is not None and stored.content == "hi"
    assert [e.type for e in events] == ["conversation.created", "message.created"]
    assert events[1].payload["message"]["id"] == message.id
    assert events[1].id > events[0].id


async def test_a_refused_send_leaves_no_trace(sessions, settings: Settings, make_user: MakeUser) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    with sessions() as session:
        conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
    with sessions() as session:
        with pytest.raises(NotFound):
            send_message(session, settings, carol, conversation.id, MessageDraft(content="let me in"))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
        assert session.scalar(select(func.count()).select_from(Event)) == 1


async def test_concurrent_sends_with_one_client_id_store_one_message(sessions, settings: Settings, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    with sessions() as session:
        conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))

    async def attempt():
        with sessions() as session:
            return send_message(session, settings, alice, conversation.id, MessageDraft(content="once", client_id="k-1"))

    results = await asyncio.gather(*(attempt() for _ in range(10)))

    assert len({message.id for message, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1
        assert session.scalar(select(func.count()).where(Event.type == "message.created")) == 1


async def test_a_client_id_reused_for_other_content_is_a_conflict(sessions, settings: Settings, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    with sessions() as session:
        conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
        send_message(session, settings, alice, conversation.id, MessageDraft(content="one", client_id="k"))
        with pytest.raises(Conflict) as conflict:
            send_message(session, settings, alice, conversation.id, MessageDraft(content="two", client_id="k"))
    assert conflict.value.code == "client_id_reused"
