"""A suspension takes effect at once on every API process: the suspended user's live WebSocket on
another node closes (4003) and that node, which had cached the user's token for 300 s, answers 401
suspended. Two real `parley serve` processes on PostgreSQL and a Redis of the test's own."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.api.conftest import ADMIN
from tests.realtime.cluster import cluster  # noqa: F401  (the fixture)
from tests.realtime.test_token_revocation import BUS_DEADLINE, CachingCluster, _status, caching_cluster  # noqa: F401


async def test_a_suspension_on_one_node_closes_the_users_websocket_on_another(caching_cluster: CachingCluster) -> None:  # noqa: F811
    cluster = caching_cluster
    node_a, node_b = await cluster.start_node(), await cluster.start_node()
    alice, bob, _ = await cluster.alice_and_bob(node_a)
    assert await _status(cluster, node_b, alice) == 200  # node B caches alice's token
    alice_ws = await cluster.connect(node_b, alice)
    bob_ws = await cluster.connect(node_b, bob)

    async with cluster.http.post(f"{node_a.base}/api/v1/admin/users/{alice.id}/suspend", headers=ADMIN) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["suspended"] is True
    started = time.monotonic()

    # Her socket on node B closes, well inside the deadline, with the suspension's code.
    while (message := await alice_ws.receive(timeout=BUS_DEADLINE)).type == aiohttp.WSMsgType.TEXT:
        pass  # frames sent before (presence)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4003, message
    assert message.extra == "suspended"
    assert time.monotonic() - started < BUS_DEADLINE
    # Bob's stays open.
    await bob_ws.send_json({"type": "ping"})
    assert (await bob_ws.receive_json(timeout=5))["type"] in ("pong", "presence")

    # Node B refuses her token at once, though it had cached it for 300 s.
    for node in (node_a, node_b):
        async with cluster.http.get(f"{node.base}/api/v1/me", headers=alice.auth) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "suspended"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await cluster.connect(node_b, alice)

    async with cluster.http.post(f"{node_a.base}/api/v1/admin/users/{alice.id}/unsuspend", headers=ADMIN) as response:
        assert response.status == 200
    deadline = time.monotonic() + BUS_DEADLINE
    while await _status(cluster, node_b, alice) != 200:
        assert time.monotonic() < deadline
    await bob_ws.close()
