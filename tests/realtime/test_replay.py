"""Reconnecting with ?since=: every missed event once, in order, then live ones; resync_required
when the gap is too old or too large; a slow client is cut off without stalling anyone else."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from datetime import timedelta

from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from parley.models import Event, utcnow
from tests.api.conftest import MakePerson, provision, send, start_conversation
from tests.realtime.conftest import MakeClient, connect, frame_where, frames_before_pong, of_type


async def test_reconnecting_with_since_replays_the_missed_events_then_goes_live(
    client: TestClient, make_person: MakePerson
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    bob_ws = await connect(client, bob)
    first = await send(client, alice, conversation["id"], "first")
    seen = await frame_where(bob_ws, of_type("message.created"))
    assert seen["data"]["message"]["id"] == first["id"]
    await bob_ws.close()

    missed = [(await send(client, alice, conversation["id"], f"while away {i}"))["id"] for i in range(5)]
    bob_ws = await connect(client, bob, since=seen["event_id"])
    replayed = [await frame_where(bob_ws, of_type("message.created")) for _ in missed]
    assert [f["data"]["message"]["id"] for f in replayed] == missed
    assert [f["event_id"] for f in replayed] == sorted(f["event_id"] for f in replayed)
    assert replayed[0]["event_id"] > seen["event_id"]

    live = await send(client, alice, conversation["id"], "back online")
    frame = await frame_where(bob_ws, of_type("message.created"))
    assert frame["data"]["message"]["id"] == live["id"]
    assert [f for f in await frames_before_pong(bob_ws) if f["type"].startswith("message.")] == []


async def test_replay_shows_only_the_clients_own_conversations(client: TestClient, make_person: MakePerson) -> None:
    alice, bob, carol = await make_person("alice"), await make_person("bob"), await make_person("carol")
    with_bob = await start_conversation(client, alice, bob)
    with_carol = await start_conversation(client, alice, carol)
    bob_ws = await connect(client, bob)
    await send(client, alice, with_bob["id"], "hello bob")
    mark = (await frame_where(bob_ws, of_type("message.created")))["event_id"]
    await bob_ws.close()
    await send(client, alice, with_carol["id"], "for carol only")
    for_bob = await send(client, alice, with_bob["id"], "for bob")
    bob_ws = await connect(client, bob, since=mark)
    frames = [f for f in await frames_before_pong(bob_ws) if f["type"] != "presence"]
    assert [(f["type"], f["data"]["message"]["id"]) for f in frames] == [("message.created", for_bob["id"])]


async def test_a_gap_older_than_the_window_or_too_large_needs_a_resync(
    client: TestClient, make_person: MakePerson, sessions: sessionmaker[Session]
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    bob_ws = await connect(client, bob)
    await send(client, alice, conversation["id"], "old news")
    old = (await frame_where(bob_ws, of_type("message.created")))["event_id"]
    await bob_ws.close()

    with sessions() as session, session.begin():
        session.execute(update(Event).where(Event.id == old).values(created_at=utcnow() - timedelta(days=30)))
    bob_ws = await connect(client, bob, since=old)
    resync = await frame_where(bob_ws, lambda f: f["type"] != "presence")
    assert resync["type"] == "resync_required"
    # an id the server never issued
    unknown_ws = await connect(client, bob, since=10**12)
    assert (await frame_where(unknown_ws, lambda f: f["type"] != "presence"))["type"] == "resync_required"
    # After a resync_required the connection carries live events as usual.
    live = await send(client, alice, conversation["id"], "fresh")
    assert (await frame_where(bob_ws, of_type("message.created")))["data"]["message"]["id"] == live["id"]


async def test_since_zero_replays_from_the_beginning_while_it_is_within_the_limits(
    make_client: MakeClient, sessions: sessionmaker[Session]
) -> None:
    client = await make_client(realtime_replay_max_events=3)
    alice, bob, carol = await provision(client, "alice"), await provision(client, "bob"), await provision(client, "carol")
    nothing_yet = await connect(client, bob, since=0)
    assert [f for f in await frames_before_pong(nothing_yet) if f["type"] != "presence"] == []
    conversation = await start_conversation(client, alice, bob)
    first = await send(client, alice, conversation["id"], "first")
    await start_conversation(client, alice, carol)  # not bob's: neither replayed nor counted

    bob_ws = await connect(client, bob, since=0)
    frames = [f for f in await frames_before_pong(bob_ws) if f["type"] != "presence"]
    assert [f["type"] for f in frames] == ["conversation.created", "message.created"]
    assert frames[1]["data"]["message"]["id"] == first["id"]

    # Past the limits, "from the beginning" is a resync like any other position: too many ...
    for i in range(2):
        await send(client, alice, conversation["id"], f"more {i}")
    too_many = await connect(client, bob, since=0)
    assert (await frame_where(too_many, lambda f: f["type"] != "presence"))["type"] == "resync_required"
    # ... or the first of them older than the window.
    with sessions() as session, session.begin():
        session.execute(update(Event).values(created_at=utcnow() - timedelta(days=30)))
    carol_ws = await connect(client, carol, since=0)
    assert (await frame_where(carol_ws, lambda f: f["type"] != "presence"))["type"] == "resync_required"


async def test_more_missed_events_than_the_limit_needs_a_resync(make_client: MakeClient) -> None:
    client = await make_client(realtime_replay_max_events=3)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    conversation = await start_conversation(client, alice, bob)
    bob_ws = await connect(client, bob)
    await send(client, alice, conversation["id"], "mark")
    mark = (await frame_where(bob_ws, of_type("message.created")))["event_id"]
    await bob_ws.close()
    for i in range(4):
        await send(client, alice, conversation["id"], f"missed {i}")
    bob_ws = await connect(client, bob, since=mark)
    assert (await frame_where(bob_ws, lambda f: f["type"] != "presence"))["type"] == "resync_required"


def _raw_websocket(port: int, token: str) -> socket.socket:
    """A client that completes the handshake and then never reads: its receive buffer is tiny."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _cut_off(sock: socket.socket) -> bool:
    """Drain what the server managed to send; True once the server has closed the connection."""
    sock.settimeout(0.5)
    try:
        while chunk := sock.recv(65536):
            del chunk
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def test_a_client_that_never_reads_is_disconnected_and_others_keep_receiving(make_client: MakeClient) -> None:
    client = await make_client(ws_send_queue_frames=8, ws_send_timeout_seconds=2.0, max_message_chars=200_000)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    conversation = await start_conversation(client, alice, bob)
    slow = await asyncio.to_thread(_raw_websocket, client.port, bob.token)
    reader = await connect(client, bob)

    big = "x" * 150_000  # a few of these fill any socket buffer
    sent_ids = [(await send(client, alice, conversation["id"], big))["id"] for _ in range(40)]
    received = [(await frame_where(reader, of_type("message.created")))["data"]["message"]["id"] for _ in sent_ids]
    assert received == sent_ids  # the healthy connection got everything, in order

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await asyncio.to_thread(_cut_off, slow):
        assert loop.time() < deadline, "the slow client was never disconnected"
    slow.close()


async def test_a_client_that_stops_answering_pings_is_disconnected(make_client: MakeClient) -> None:
    client = await make_client(ws_heartbeat_seconds=0.3)
    alice = await provision(client, "alice")
    silent = await asyncio.to_thread(_raw_websocket, client.port, alice.token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await asyncio.to_thread(_cut_off, silent):  # reads the pings, never answers them
        assert loop.time() < deadline, "a client that never answered a ping is still connected"
    silent.close()
