"""The WebSocket endpoint in one process, on both databases: events, membership, credentials,
malformed frames, typing, presence and shutdown."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from parley.db import transaction
from parley.events import AttachmentProcessed, EventType
from parley.ids import new_id
from parley.models import WsTicket, utcnow
from parley.services.outbox import record_event
from tests.api.conftest import ADMIN, MakePerson, send, start_conversation
from tests.realtime.conftest import connect, frame_where, frames_before_pong, next_frame, of_type


async def test_the_other_member_and_every_tab_receive_messages_reads_and_deletions(
    client: TestClient, make_person: MakePerson
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    bob_phone, bob_laptop = await connect(client, bob), await connect(client, bob)
    alice_tab = await connect(client, alice)

    sent = await send(client, alice, conversation["id"], "Is the logo ready?")
    for ws in (bob_phone, bob_laptop, alice_tab):
        frame = await frame_where(ws, of_type("message.created"))
        assert frame["conversation_id"] == conversation["id"]
        assert frame["data"]["message"] == sent  # the same shape as the REST response
        assert isinstance(frame["event_id"], int)

    read = await client.post(f"/api/v1/conversations/{conversation['id']}/read", headers=bob.auth)
    assert read.status == 200, await read.text()
    receipt = (await frame_where(alice_tab, of_type("message.read")))["data"]
    assert (receipt["reader_id"], receipt["up_to_message_id"], receipt["count"]) == (bob.id, sent["id"], 1)

    deleted = await client.delete(f"/api/v1/messages/{sent['id']}", headers=alice.auth)
    assert deleted.status in (200, 204), await deleted.text()
    gone = await frame_where(bob_laptop, of_type("message.deleted"))
    assert gone["data"]["message"]["id"] == sent["id"]


async def test_a_new_conversation_reaches_its_recipient(client: TestClient, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    bob_ws = await connect(client, bob)
    conversation = await start_conversation(client, alice, bob)
    frame = await frame_where(bob_ws, of_type("conversation.created"))
    assert frame["conversation_id"] == conversation["id"]
    members = frame["data"]["conversation"]
    assert (members["initiator"]["id"], members["recipient"]["id"]) == (alice.id, bob.id)


async def test_non_members_receive_nothing(client: TestClient, make_person: MakePerson) -> None:
    alice, bob, mallory = await make_person("alice"), await make_person("bob"), await make_person("mallory")
    conversation = await start_conversation(client, alice, bob)
    bob_ws, mallory_ws = await connect(client, bob), await connect(client, mallory)
    await send(client, alice, conversation["id"], "private")
    await frame_where(bob_ws, of_type("message.created"))
    assert await frames_before_pong(mallory_ws) == []


async def test_tickets_work_once_and_bad_expired_or_reused_ones_are_refused(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session]
) -> None:
    alice = await make_person("alice")

    async def ticket() -> str:
        response = await client.post("/api/v1/ws/tickets", headers=alice.auth)
        assert response.status == 201, await response.text()
        return str((await response.json())["ticket"])

    async def refused(**params: str) -> dict[str, str]:
        response = await client.get("/api/v1/ws", params=params, headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
        assert response.status == 401, await response.text()
        return dict((await response.json())["error"])

    good = await ticket()
    ws = await client.ws_connect("/api/v1/ws", params={"ticket": good})
    assert (await next_frame(ws))["data"]["user_id"] == alice.id
    await ws.close()

    assert (await refused(ticket=good))["code"] == "invalid_ticket"  # reused
    assert (await refused(ticket="wst_not-a-real-ticket"))["code"] == "invalid_ticket"
    stale = await ticket()
    with sessions() as session, session.begin():
        session.execute(update(WsTicket).values(expires_at=utcnow()))
    assert (await refused(ticket=stale))["code"] == "invalid_ticket"
    assert (await refused())["code"] == "unauthorized"


async def test_credentials_are_checked_before_the_upgrade(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    for headers, status, code in (
        ({"Authorization": "Bearer plt_unknown"}, 401, "unauthorized"),
        (ADMIN, 403, "user_token_required"),
    ):
        try:
            await client.ws_connect("/api/v1/ws", headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == status
        else:
            raise AssertionError("the upgrade was accepted")
        plain = await client.get("/api/v1/ws", headers={**headers, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
        assert (plain.status, (await plain.json())["error"]["code"]) == (status, code)
    no_upgrade = await client.get("/api/v1/ws", headers=alice.auth)
    assert (no_upgrade.status, (await no_upgrade.json())["error"]["code"]) == (426, "upgrade_required")
    bad_since = await client.get("/api/v1/ws", params={"since": "yesterday"}, headers=alice.auth)
    assert (bad_since.status, (await bad_since.json())["error"]["code"]) == (422, "validation_error")


async def test_malformed_frames_get_errors_and_the_connection_lives_on(client: TestClient, make_person: MakePerson) -> None:
    alice, bob, carol = await make_person("alice"), await make_person("bob"), await make_person("carol")
    await start_conversation(client, bob, carol)
    ws = await connect(client, alice)
    cases = [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "typing"}', "invalid_frame"),
        ('{"type": "typing", "conversation_id": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}', "not_participant"),
    ]
    for text, code in cases:
        await ws.send_str(text)
        frame = await next_frame(ws)
        assert (frame["type"], frame["data"]["code"]) == ("error", code), text
    await ws.send_bytes(b"\x00\x01")
    assert (await next_frame(ws))["data"]["code"] == "binary_not_supported"
    assert await frames_before_pong(ws) == []


async def test_an_oversized_frame_closes_the_connection(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    ws = await connect(client, alice)
    await ws.send_str('{"type": "ping", "padding": "' + "x" * 70_000 + '"}')
    closing = await ws.receive(timeout=10)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG


async def test_typing_is_relayed_to_the_other_member_at_a_limited_rate(client: TestClient, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    alice_ws, bob_ws = await connect(client, alice), await connect(client, bob)
    for _ in range(5):
        await alice_ws.send_json({"type": "typing", "conversation_id": conversation["id"]})
    # alice's own typing is not echoed to her
    assert [f for f in await frames_before_pong(alice_ws) if f["type"] == "typing"] == []
    typing = [f for f in await frames_before_pong(bob_ws) if f["type"] == "typing"]
    assert len(typing) == 1  # the rest fell inside typing_min_interval_seconds
    assert typing[0]["conversation_id"] == conversation["id"]
    assert typing[0]["data"]["user_id"] == alice.id and typing[0]["data"]["expires_at"]


async def test_presence_online_offline_and_over_rest(client: TestClient, make_person: MakePerson) -> None:
    alice, bob, stranger = await make_person("alice"), await make_person("bob"), await make_person("stranger")
    await start_conversation(client, alice, bob)
    alice_ws = await connect(client, alice)

    bob_ws = await connect(client, bob)
    online = await frame_where(alice_ws, of_type("presence"))
    assert (online["data"]["user_id"], online["data"]["status"]) == (bob.id, "online")
    seen = await client.get(f"/api/v1/users/{bob.id}/presence", headers=alice.auth)
    assert (await seen.json())["status"] == "online"

    await bob_ws.close()
    offline = await frame_where(alice_ws, of_type("presence"))
    assert (offline["data"]["user_id"], offline["data"]["status"]) == (bob.id, "offline")
    assert offline["data"]["last_seen_at"]
    seen = await client.get(f"/api/v1/users/{bob.id}/presence", headers=alice.auth)
    body = await seen.json()
    assert (body["status"], body["last_seen_at"] is not None) == ("offline", True)

    hidden = await client.get(f"/api/v1/users/{bob.id}/presence", headers=stranger.auth)
    assert (hidden.status, (await hidden.json())["error"]["code"]) == (404, "not_found")


async def test_a_reload_within_the_grace_period_does_not_flap(client: TestClient, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    await start_conversation(client, alice, bob)
    alice_ws = await connect(client, alice)
    first = await connect(client, bob)
    await frame_where(alice_ws, of_type("presence"))
    await first.close()
    await connect(client, bob)  # the reload, well inside 0.3 s
    # Had bob been reported offline and online again, both frames would be queued before this pong
    # once the grace period is over; wait past it by asking for bob's presence until it has passed.
    for _ in range(3):
        body = await (await client.get(f"/api/v1/users/{bob.id}/presence", headers=alice.auth)).json()
        assert body["status"] == "online"
    assert [f for f in await frames_before_pong(alice_ws) if f["type"] == "presence"] == []


async def test_server_shutdown_closes_connections_with_1001(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    ws = await connect(client, alice)
    stopping = asyncio.create_task(client.server.close())
    closing = await ws.receive(timeout=10)
    await stopping
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == WSCloseCode.GOING_AWAY


async def test_events_written_outside_the_api_arrive_and_reach_an_uploader_before_sending(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session]
) -> None:
    """A worker's attachment.ready is found by the poll; before the upload is sent it concerns only
    its uploader, and after, both members of the conversation."""
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    alice_ws, bob_ws = await connect(client, alice), await connect(client, bob)

    def ready(conversation_id: str | None) -> AttachmentProcessed:
        return AttachmentProcessed.model_validate(
            {"attachment": {
                "id": new_id(), "name": "a.png", "url": "", "kind": "image", "content_type": "image/png", "size": 3,
                "status": "ready", "uploader_id": alice.id, "message_id": None, "conversation_id": conversation_id,
                "codec": None, "failure_reason": None, "created_at": None,
            }}
        )

    unsent, sent = ready(None), ready(conversation["id"])
    with sessions() as session, transaction(session):
        record_event(session, EventType.ATTACHMENT_READY, unsent, conversation_id=None, audience=[alice.id])
    with sessions() as session, transaction(session):
        record_event(
            session, EventType.ATTACHMENT_READY, sent, conversation_id=conversation["id"], audience=[alice.id, bob.id]
        )

    frames = [await frame_where(alice_ws, of_type("attachment.ready")) for _ in range(2)]
    assert [f["data"]["attachment"]["id"] for f in frames] == [unsent.attachment.id, sent.attachment.id]
    bobs = await frame_where(bob_ws, of_type("attachment.ready"))
    assert bobs["data"]["attachment"]["id"] == sent.attachment.id  # never the upload bob was not sent
