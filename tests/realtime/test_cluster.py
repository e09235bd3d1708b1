"""Several API processes act as one: a message sent through one reaches a client connected to
another; reconnecting anywhere with ?since= loses nothing; presence survives a node's SIGKILL;
`parley serve --workers 2` shares one port; a Redis outage delays nothing that matters."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
from aiohttp import WSCloseCode

from tests.realtime.cluster import Cluster, eventually
from tests.realtime.conftest import frame_where, of_type


async def test_a_message_sent_on_one_node_reaches_a_client_on_another(cluster: Cluster) -> None:
    node_a, node_b = await cluster.start_node(), await cluster.start_node()
    alice, bob, conversation = await cluster.alice_and_bob(node_a)
    alice_ws, bob_ws = await cluster.connect(node_a, alice), await cluster.connect(node_b, bob)

    path = f"/api/v1/conversations/{conversation['id']}"
    sent = await cluster.call(node_a, "POST", f"{path}/messages", alice, json={"content": "across nodes"})
    created = await frame_where(bob_ws, of_type("message.created"))
    assert created["data"]["message"] == sent

    await cluster.call(node_b, "POST", f"{path}/read", bob)
    read = await frame_where(alice_ws, of_type("message.read"))
    assert (read["data"]["reader_id"], read["data"]["up_to_message_id"]) == (bob.id, sent["id"])

    await cluster.call(node_a, "DELETE", f"/api/v1/messages/{sent['id']}", alice)
    deleted = await frame_where(bob_ws, of_type("message.deleted"))
    assert deleted["data"]["message"]["id"] == sent["id"]


async def test_reconnecting_anywhere_while_messages_arrive_loses_and_repeats_nothing(cluster: Cluster) -> None:
    nodes = [await cluster.start_node(), await cluster.start_node()]
    alice, bob, conversation = await cluster.alice_and_bob(nodes[0])
    bob_ws = await cluster.connect(nodes[1], bob)
    total = 60
    sent: list[str] = []

    async def keep_sending() -> None:
        for i in range(total):
            message = await cluster.call(
                nodes[i % 2], "POST", f"/api/v1/conversations/{conversation['id']}/messages", alice, json={"content": f"m{i}"}
            )
            sent.append(message["id"])

    sender = asyncio.create_task(keep_sending())
    received: list[tuple[int, str]] = []
    reconnects = 0
    while len(received) < total:
        frame = await frame_where(bob_ws, of_type("message.created"), timeout=30)
        received.append((frame["event_id"], frame["data"]["message"]["id"]))
        if len(received) % 7 == 0:  # drop the connection now and then, and come back on the other node
            await bob_ws.close()
            reconnects += 1
            bob_ws = await cluster.connect(nodes[reconnects % 2], bob, since=received[-1][0])
    await sender
    assert [message_id for _, message_id in received] == sent
    assert [event_id for event_id, _ in received] == sorted({event_id for event_id, _ in received})
    assert reconnects >= 8


async def test_presence_spans_nodes_and_a_killed_node_takes_its_users_offline(cluster: Cluster) -> None:
    node_a, node_b = await cluster.start_node(), await cluster.start_node()
    alice, bob, _ = await cluster.alice_and_bob(node_a)
    alice_ws = await cluster.connect(node_a, alice)

    await cluster.connect(node_b, bob)
    online = await frame_where(alice_ws, of_type("presence"))
    assert (online["data"]["user_id"], online["data"]["status"]) == (bob.id, "online")
    status = await cluster.call(node_a, "GET", f"/api/v1/users/{bob.id}/presence", alice)
    assert status["status"] == "online"

    node_b.process.kill_group()  # SIGKILL: no goodbye, no clean close
    offline = await frame_where(alice_ws, of_type("presence"), timeout=15)
    assert (offline["data"]["user_id"], offline["data"]["status"]) == (bob.id, "offline")
    assert offline["data"]["last_seen_at"]
    status = await cluster.call(node_a, "GET", f"/api/v1/users/{bob.id}/presence", alice)
    assert status["status"] == "offline"


async def test_serve_workers_runs_several_processes_on_one_port(cluster: Cluster) -> None:
    node = await cluster.start_node("--workers", "2")
    alice, bob, conversation = await cluster.alice_and_bob(node)

    connections: dict[str, aiohttp.ClientWebSocketResponse] = {}

    async def both_processes_answered() -> bool:
        ws = await cluster.http.ws_connect(f"{node.base}/api/v1/ws", headers=bob.auth)
        hello = await ws.receive_json(timeout=10)
        if hello["data"]["node_id"] in connections:
            await ws.close()
        else:
            connections[hello["data"]["node_id"]] = ws
        return len(connections) == 2

    await eventually(both_processes_answered, timeout=30, what="connections on two API processes")
    sent = await cluster.call(node, "POST", f"/api/v1/conversations/{conversation['id']}/messages", alice, json={"content": "hi"})
    for ws in connections.values():
        assert (await frame_where(ws, of_type("message.created")))["data"]["message"]["id"] == sent["id"]

    node.process.popen.send_signal(signal.SIGTERM)
    for ws in connections.values():
        # Frames sent while the processes wind down (bob's other connection going away shows as
        # presence) may come first; what matters is that each connection then closes with 1001.
        closing = await ws.receive(timeout=15)
        while closing.type is aiohttp.WSMsgType.TEXT:
            closing = await ws.receive(timeout=15)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
        assert ws.close_code == WSCloseCode.GOING_AWAY, cluster.processes.output()[-4000:]
    assert node.process.popen.wait(timeout=15) == 0


async def test_a_redis_outage_delays_events_but_loses_none_and_the_bus_comes_back(cluster: Cluster) -> None:
    node_a, node_b = await cluster.start_node(), await cluster.start_node()
    alice, bob, conversation = await cluster.alice_and_bob(node_a)
    alice_ws, bob_ws = await cluster.connect(node_a, alice), await cluster.connect(node_b, bob)
    messages = f"/api/v1/conversations/{conversation['id']}/messages"

    cluster.redis.stop()
    during = await cluster.call(node_a, "POST", messages, alice, json={"content": "while redis is down"})
    assert (await frame_where(bob_ws, of_type("message.created")))["data"]["message"]["id"] == during["id"]

    cluster.redis.start()

    async def typing_crosses_nodes() -> bool:
        await alice_ws.send_json({"type": "typing", "conversation_id": conversation["id"]})
        try:
            frame = await frame_where(bob_ws, of_type("typing"), timeout=0.5)
        except TimeoutError:
            return False
        return bool(frame["data"]["user_id"] == alice.id)

    await eventually(typing_crosses_nodes, timeout=30, what="typing over the reconnected bus", log=cluster.processes.output)
    after = await cluster.call(node_a, "POST", messages, alice, json={"content": "redis is back"})
    assert (await frame_where(bob_ws, of_type("message.created")))["data"]["message"]["id"] == after["id"]
