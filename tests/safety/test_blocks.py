"""Blocks: the blocked user cannot start a conversation with, or send to, the blocker (403 blocked,
on REST and worker paths, whichever send path runs), the blocker still can; typing and presence of
the blocked user no longer reach the blocker; unblocking restores everything."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.errors import Forbidden
from parley.services.contact import contact_user
from parley.services.conversations import OtherUser
from parley.services.messages import MessageDraft, send_message
from tests.api.conftest import Person, provision, start_conversation
from tests.realtime.conftest import connect, frame_where, frames_before_pong, of_type
from tests.safety.conftest import AppFor, error_of, load_user


async def _send(client: TestClient, sender: Person, cid: str, text: str = "hi", **extra: object) -> int:
    response = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": text, **extra}, headers=sender.auth)
    if response.status == 403:
        assert (await error_of(response)) == {"code": "blocked", "message": "you cannot message this user", "details": {}}
    return response.status


async def test_a_block_stops_the_blocked_user_reaching_the_blocker_both_ways_round(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = await app_for()
    alice, bob, carol = [await provision(client, n) for n in ("alice", "bob", "carol")]
    cid = (await start_conversation(client, alice, bob))["id"]

    assert (await client.post(f"/api/v1/users/{alice.id}/block", headers=bob.auth)).status == 204
    assert (await client.post(f"/api/v1/users/{alice.id}/block", headers=bob.auth)).status == 204  # again: no change
    blocks = await (await client.get("/api/v1/me/blocks", headers=bob.auth)).json()
    assert [u["id"] for u in blocks["items"]] == [alice.id]
    assert (await (await client.get("/api/v1/me/blocks", headers=alice.auth)).json())["items"] == []

    # alice can no longer send to bob, on either send path (text, and with an attachment) ...
    assert await _send(client, alice, cid) == 403
    assert await _send(client, alice, cid, attachments=[{"name": "a.pdf", "url": "https://files.example.com/a.pdf"}]) == 403
    assert await _send(client, alice, cid, client_id="c-1") == 403
    with sessions() as session, pytest.raises(Forbidden) as denied:
        send_message(session, settings, load_user(sessions, alice.id), cid, MessageDraft(content="from a worker"))
    assert denied.value.code == "blocked"
    # ... while bob still can reach alice.
    assert await _send(client, bob, cid, "bob to alice") == 201
    # A stranger is still told the conversation does not exist.
    assert await _send(client, carol, cid) == 404

    # carol blocks bob before they ever talked: bob cannot start a conversation with her.
    assert (await client.post(f"/api/v1/users/{bob.id}/block", headers=carol.auth)).status == 204
    refused = await client.post("/api/v1/conversations", json={"user_id": carol.id}, headers=bob.auth)
    assert refused.status == 403 and (await error_of(refused))["code"] == "blocked"
    with sessions() as session, pytest.raises(Forbidden):
        contact_user(session, settings, load_user(sessions, bob.id), OtherUser(user_id=carol.id))
    # carol can start one with bob, and bob still cannot answer.
    started = await client.post("/api/v1/conversations", json={"user_id": bob.id, "message": {"content": "hello"}}, headers=carol.auth)
    assert started.status == 201
    assert await _send(client, bob, (await started.json())["id"]) == 403

    # Unblocking restores it.
    assert (await client.delete(f"/api/v1/users/{alice.id}/block", headers=bob.auth)).status == 204
    assert (await client.delete(f"/api/v1/users/{alice.id}/block", headers=bob.auth)).status == 204
    assert await _send(client, alice, cid, "back") == 201


async def test_block_input(app_for: AppFor) -> None:
    client = await app_for()
    alice = await provision(client, "alice")
    itself = await client.post(f"/api/v1/users/{alice.id}/block", headers=alice.auth)
    assert itself.status == 422 and (await error_of(itself))["code"] == "cannot_block_self"
    missing = await client.post("/api/v1/users/01ARZ3NDEKTSV4RRFFQ69G5FAV/block", headers=alice.auth)
    assert missing.status == 404


async def test_typing_and_presence_of_a_blocked_user_no_longer_reach_the_blocker(
    app_for: AppFor,
) -> None:
    client = await app_for(presence_grace_seconds=0.3, realtime_poll_seconds=0.2, typing_min_interval_seconds=0.0)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    cid = (await start_conversation(client, alice, bob))["id"]
    bob_ws = await connect(client, bob)
    alice_ws = await connect(client, alice)
    assert (await frame_where(bob_ws, of_type("presence")))["data"]["user_id"] == alice.id
    await alice_ws.send_json({"type": "typing", "conversation_id": cid})
    assert (await frame_where(bob_ws, of_type("typing")))["data"]["user_id"] == alice.id

    assert (await client.post(f"/api/v1/users/{alice.id}/block", headers=bob.auth)).status == 204
    await alice_ws.send_json({"type": "typing", "conversation_id": cid})
    # Nor over REST: to bob, alice's presence is no one's to see; she still sees his.
    assert (await client.get(f"/api/v1/users/{alice.id}/presence", headers=bob.auth)).status == 404
    assert (await client.get(f"/api/v1/users/{bob.id}/presence", headers=alice.auth)).status == 200
    await alice_ws.close()  # alice goes offline: bob is not told
    await asyncio.sleep(1.0)  # past the presence grace, and time for the typing relay
    assert [f["type"] for f in await frames_before_pong(bob_ws) if f["type"] in ("typing", "presence")] == []
    # bob's typing still reaches alice (the block is one way).
    alice_ws = await connect(client, alice)
    await bob_ws.send_json({"type": "typing", "conversation_id": cid})
    assert (await frame_where(alice_ws, of_type("typing")))["data"]["user_id"] == bob.id
