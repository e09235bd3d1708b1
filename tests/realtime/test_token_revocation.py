"""Revoking a token takes effect at once on every API process, though each caches who a token
belongs to (here for 300 s): the revoking process forgets the user's entries before it answers,
and tells the others over the realtime bus (Redis), which forget theirs on receipt. Two real
`parley serve` processes on PostgreSQL and a Redis of the test's own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from parley.config import load_settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.services.tokens import revoke_token
from tests.api.conftest import ADMIN, Person
from tests.realtime.cluster import Cluster, Node, running_cluster

CACHE_SECONDS = "300"  # far longer than the test: only the bus can make a node forget in time
BUS_DEADLINE = 3.0


@dataclass
class CachingCluster(Cluster):
    """The cluster of tests/realtime/cluster.py, its nodes caching tokens for CACHE_SECONDS."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "PARLEY_TOKEN_CACHE_SECONDS": CACHE_SECONDS}


@pytest.fixture
async def caching_cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[CachingCluster]:
    async with running_cluster(postgres_url, tmp_path, CachingCluster) as started:
        yield started


@pytest.fixture
def direct_sessions(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_sync_db_engine(load_settings(database_url=postgres_url))
    yield sync_session_factory(engine)
    engine.dispose()


async def _status(cluster: Cluster, node: Node, person: Person, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token or person.token}"}
    async with cluster.http.get(f"{node.base}/api/v1/me", headers=headers) as response:
        if response.status == 200:
            assert (await response.json())["id"] == person.id
        return response.status


async def _second_token(cluster: Cluster, node: Node, person: Person) -> str:
    async with cluster.http.post(f"{node.base}/api/v1/users/{person.id}/tokens", headers=ADMIN) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["token"])


async def test_a_token_revoked_on_one_node_is_refused_by_another_that_had_cached_it(
    caching_cluster: CachingCluster, direct_sessions: sessionmaker[Session]
) -> None:
    cluster = caching_cluster
    node_a, node_b = await cluster.start_node(), await cluster.start_node()

    # The control: a token revoked behind the nodes' backs (straight in the database, no bus
    # message) keeps working on the node that cached it. So the nodes do cache, for long.
    carol = await cluster.person(node_a, "carol")
    assert await _status(cluster, node_b, carol) == 200
    with direct_sessions() as session:
        revoke_token(session, carol.token_id, actor_id=None)
    assert await _status(cluster, node_b, carol) == 200

    # Alice uses her token on both nodes: both cache it. She also has a second token.
    alice = await cluster.person(node_a, "alice")
    other_token = await _second_token(cluster, node_a, alice)
    assert await _status(cluster, node_a, alice) == 200
    assert await _status(cluster, node_b, alice) == 200
    assert await _status(cluster, node_b, alice, other_token) == 200

    # She revokes it on node A (with the token itself: signing out).
    async with cluster.http.delete(f"{node_a.base}/api/v1/tokens/{alice.token_id}", headers=alice.auth) as response:
        assert response.status == 204, await response.text()

    # Node A refuses it at once: no waiting.
    assert await _status(cluster, node_a, alice) == 401

    # Node B refuses it within a short deadline, far inside its 300 s cache: the bus told it.
    deadline = time.monotonic() + BUS_DEADLINE
    while (status := await _status(cluster, node_b, alice)) != 401:
        assert status == 200
        if time.monotonic() > deadline:
            pytest.fail(f"node B still accepts the revoked token {BUS_DEADLINE:g} s after revocation\n"
                        + cluster.processes.output()[-4000:])
        await asyncio.sleep(0.05)

    # Her other token still works everywhere (the forgotten entries are looked up again).
    assert await _status(cluster, node_b, alice, other_token) == 200
    assert await _status(cluster, node_a, alice, other_token) == 200
