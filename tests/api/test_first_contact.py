"""First contact (POST /api/v1/conversations with a first `message`) is one transaction: a first
message that fails leaves no conversation behind, and a repeated request with the same
`client_id` answers with the same conversation and message."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from parley.ids import new_id
from parley.models import Conversation, Event, Message
from tests.api.conftest import MakePerson, Person
from tests.api.uploads import upload

CONVERSATIONS = "/api/v1/conversations"


async def _contact(client: TestClient, sender: Person, recipient: Person, message: dict[str, Any]) -> Any:
    return await client.post(CONVERSATIONS, json={"user_id": recipient.id, "message": message}, headers=sender.auth)


async def _assert_no_conversation(client: TestClient, alice: Person, bob: Person) -> None:
    """What each of them can observe: no conversation with the other, an empty inbox."""
    for viewer, other in ((alice, bob), (bob, alice)):
        found = await client.get(f"{CONVERSATIONS}/with/{other.id}", headers=viewer.auth)
        assert found.status == 404, await found.text()
        inbox = await client.get(CONVERSATIONS, headers=viewer.auth)
        assert inbox.status == 200, await inbox.text()
        assert (await inbox.json())["items"] == []


def _rows(sessions: sessionmaker[Session]) -> tuple[list[str], list[str], list[str]]:
    """(conversation ids, message contents, event types) in the database."""
    with sessions() as session:
        return (
            list(session.scalars(select(Conversation.id))),
            list(session.scalars(select(Message.content).order_by(Message.id))),
            list(session.scalars(select(Event.type).order_by(Event.id))),
        )


async def test_a_first_message_naming_an_unknown_upload_leaves_no_conversation(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session]
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    unknown = new_id()  # well formed, so it passes the body's validation and fails in the send

    response = await _contact(client, alice, bob, {"content": "Hi Bob", "attachment_ids": [unknown]})

    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "attachment_not_usable"
    assert error["details"]["attachment_id"] == unknown
    await _assert_no_conversation(client, alice, bob)
    assert _rows(sessions) == ([], [], [])  # no conversation, no message, no conversation.created


async def test_a_first_message_naming_someone_elses_upload_leaves_no_conversation(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session]
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    bobs = await upload(client, bob, "notes.txt", b"bob's notes\n", "text/plain")
    events_before = _rows(sessions)[2]  # bob's upload recorded its own event

    response = await _contact(client, alice, bob, {"content": "Hi Bob", "attachment_ids": [bobs["id"]]})

    assert response.status == 422, await response.text()
    assert (await response.json())["error"]["code"] == "attachment_not_usable"
    await _assert_no_conversation(client, alice, bob)
    conversations, messages, events = _rows(sessions)
    assert (conversations, messages, events) == ([], [], events_before)
    assert "conversation.created" not in events

    # Nothing half-made is in the way: the same contact with a good message starts it now.
    retried = await _contact(client, alice, bob, {"content": "Hi Bob"})
    assert retried.status == 201, await retried.text()
    conversation = await retried.json()
    assert conversation["last_message"]["content"] == "Hi Bob"
    found = await client.get(f"{CONVERSATIONS}/with/{alice.id}", headers=bob.auth)
    assert found.status == 200 and (await found.json())["id"] == conversation["id"]


async def test_a_failing_first_message_to_an_existing_conversation_changes_nothing(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session]
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    started = await client.post(CONVERSATIONS, json={"user_id": bob.id}, headers=alice.auth)
    assert started.status == 201, await started.text()
    before = _rows(sessions)

    response = await _contact(client, alice, bob, {"content": "again", "attachment_ids": [new_id()]})

    assert response.status == 422, await response.text()
    assert _rows(sessions) == before
    found = await client.get(f"{CONVERSATIONS}/with/{bob.id}", headers=alice.auth)
    assert found.status == 200, await found.text()
    assert (await found.json())["last_message"] is None


async def test_repeating_a_first_contact_with_a_client_id_returns_the_same_conversation_and_message(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session]
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    message = {"content": "Hi Bob! 👋", "client_id": "first-contact-1"}

    first = await _contact(client, alice, bob, message)
    assert first.status == 201, await first.text()
    again = await _contact(client, alice, bob, message)
    assert again.status == 200, await again.text()

    created, repeated = await first.json(), await again.json()
    assert repeated["id"] == created["id"]
    assert created["last_message"]["content"] == "Hi Bob! 👋"
    assert repeated["last_message"] == created["last_message"]
    history = await client.get(f"{CONVERSATIONS}/{created['id']}/messages", headers=bob.auth)
    assert [m["id"] for m in (await history.json())["items"]] == [created["last_message"]["id"]]
    conversations, messages, events = _rows(sessions)
    assert (len(conversations), messages) == (1, ["Hi Bob! 👋"])
    assert events == ["conversation.created", "message.created"]

    # The same client_id for another first message is a conflict, not a second message.
    reused = await _contact(client, alice, bob, {"content": "something else", "client_id": "first-contact-1"})
    assert reused.status == 409, await reused.text()
    assert (await reused.json())["error"]["code"] == "client_id_reused"
    assert _rows(sessions)[1] == ["Hi Bob! 👋"]
