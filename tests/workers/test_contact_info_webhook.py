"""PARLEY_CONTACT_INFO=mask as a webhook receiver sees it: a real worker delivers the masked
message (the same shape the REST API answered with, flagged contact_info), never the original."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from parley.services.contact_info import MASK
from tests.webhooks.receiver import Receiver, running_receiver
from tests.workers.conftest import Processes, WorkerSetup, wait_for_worker
from tests.workers.test_webhook_delivery import ADMIN, _api, _assert_verified, _auth, eventually, webhook_env


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.mark.parametrize("configuration", ["postgres_redis", "sqlite_embedded"])
async def test_a_webhook_receiver_gets_the_masked_message(
    configuration: str, request: pytest.FixtureRequest, processes: Processes, receiver: Receiver, aiohttp_client: Any
) -> None:
    setup: WorkerSetup = request.getfixturevalue(configuration)
    wait_for_worker(processes.worker(setup, env=webhook_env()))
    processes.beat(setup)
    api = await _api(aiohttp_client, setup, contact_info="mask")
    alice, bob = await api.person("alice"), await api.person("bob")
    hook = await api.hook(ADMIN, receiver, "admin", event_types=["message.created"])
    conversation = await api.call("POST", "/conversations", _auth(alice), 201, json={"user_id": bob["id"]})
    original = "reach me at jane@example.com"
    sent = await api.call("POST", f"/conversations/{conversation['id']}/messages", _auth(alice), 201,
                          json={"content": original})
    assert sent["content"] == f"reach me at {MASK}" and sent["flags"] == ["contact_info"]

    [got] = await eventually(lambda: receiver.requests("admin"), what="the delivery", processes=processes)
    _assert_verified([got], hook["secret"])
    assert got.json["data"] == {"message": sent}
    assert b"jane@example.com" not in got.body
