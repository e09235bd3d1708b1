"""A message sent by calling the service directly on a sync session (as a worker, a consumer or the
CLI does) is the same event as one sent over HTTP, and reaches the other member's WebSocket (found
by the realtime poll: no hook wakes this process) as the same `message.created` frame."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.models import Event, User
from parley.services.messages import MessageDraft, send_message
from tests.api.conftest import MakePerson, send, start_conversation
from tests.realtime.conftest import Frame, connect, frame_where, of_type


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and value types, not the values themselves."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def is_message(message_id: str) -> Any:
    return lambda frame: frame["type"] == "message.created" and frame["data"]["message"]["id"] == message_id


def _event_row(sessions: sessionmaker[Session], event_id: int) -> Event:
    with sessions() as session:
        event = session.scalar(select(Event).where(Event.id == event_id))
    assert event is not None
    return event


def _user(sessions: sessionmaker[Session], user_id: str) -> User:
    """The sender, loaded as a worker would, in a session of its own: the send below must be the
    outermost transaction of its session (a read that autobegins one would swallow it)."""
    with sessions() as session:
        user = session.get(User, user_id)
    assert user is not None
    return user


async def test_a_message_sent_through_the_service_is_the_same_event_and_frame_as_an_http_send(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session], settings: Settings
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    bob_ws, alice_ws = await connect(client, bob), await connect(client, alice)

    over_http = await send(client, alice, conversation["id"], "sent over HTTP")
    http_frame: Frame = await frame_where(bob_ws, is_message(over_http["id"]))

    sender = _user(sessions, alice.id)
    with sessions() as session:
        direct, created = send_message(
            session, settings, sender, conversation["id"], MessageDraft(content="sent by a worker")
        )
    assert created

    # Both members' sockets get it, found by the poll (this session has no events-committed hook).
    worker_frame = await frame_where(bob_ws, is_message(direct.id))
    senders_frame = await frame_where(alice_ws, is_message(direct.id))
    assert senders_frame == worker_frame

    # The frame is shaped like the HTTP-sent one, and its message is what HTTP shows for it.
    assert shape(worker_frame) == shape(http_frame)
    assert worker_frame["conversation_id"] == http_frame["conversation_id"] == conversation["id"]
    assert worker_frame["event_id"] > http_frame["event_id"]
    history = await client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=bob.auth)
    assert history.status == 200, await history.text()
    shown = {m["id"]: m for m in (await history.json())["items"]}
    assert worker_frame["data"]["message"] == shown[direct.id]
    assert http_frame["data"]["message"] == shown[over_http["id"]] == over_http
    assert worker_frame["data"]["message"]["sender"] == http_frame["data"]["message"]["sender"]

    # The event rows: same type, same audience (both members), same payload shape.
    http_event = _event_row(sessions, http_frame["event_id"])
    worker_event = _event_row(sessions, worker_frame["event_id"])
    assert worker_event.type == http_event.type == "message.created"
    assert worker_event.conversation_id == http_event.conversation_id == conversation["id"]
    assert worker_event.audience == http_event.audience == sorted([alice.id, bob.id])
    assert shape(worker_event.payload) == shape(http_event.payload)
    assert worker_event.payload["message"]["id"] == direct.id


async def test_a_message_sent_through_the_service_is_replayed_like_an_http_send(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session], settings: Settings
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    bob_ws = await connect(client, bob)
    over_http = await send(client, alice, conversation["id"], "sent over HTTP")
    mark = (await frame_where(bob_ws, is_message(over_http["id"])))["event_id"]
    await bob_ws.close()

    sender = _user(sessions, alice.id)
    with sessions() as session:
        direct, _ = send_message(session, settings, sender, conversation["id"], MessageDraft(content="while away"))

    bob_ws = await connect(client, bob, since=mark)
    replayed = await frame_where(bob_ws, of_type("message.created"))
    assert replayed["data"]["message"]["id"] == direct.id
    assert replayed["data"]["message"]["content"] == "while away"
    assert replayed["data"]["message"]["sender"]["id"] == alice.id
