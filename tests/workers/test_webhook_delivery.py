"""Outbound webhooks end to end: the real API, real Celery worker and beat processes, and a real
receiver on 127.0.0.1 (allow-listed) that verifies every delivery with the `standardwebhooks`
package and with an independent HMAC check. What is asserted is what the receiver got and what the
owner sees over HTTP (the delivery log, the endpoint's enabled flag)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update

from parley.api.app import init_app
from parley.models import WebhookEndpoint, utcnow
from parley.services.webhook_deliveries import LOST_ATTEMPT
from tests.conftest import ADMIN_TOKEN
from tests.webhooks.receiver import Answer, Receiver, Received, running_receiver
from tests.workers.conftest import Processes, WorkerSetup, wait_for_worker


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET_KEY = "worker-test-secret-key-0123456789abcdef"
FLOW_TIMEOUT = 60.0
POLL_SECONDS = 0.05


def webhook_env(**extra: str) -> dict[str, str]:
    return {
        "PARLEY_SECRET_KEY": SECRET_KEY,
        "PARLEY_WEBHOOK_ALLOWED_CIDRS": "127.0.0.1/32",
        **extra,
    }


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], *, what: str, processes: Processes, timeout: float = FLOW_TIMEOUT
) -> Any:
    """Poll until `check` returns something truthy, without blocking the event loop the API runs on."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{processes.output()[-6000:]}")
        await asyncio.sleep(POLL_SECONDS)


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def call(self, method: str, path: str, headers: dict[str, str], expect: int, **kwargs: Any) -> Any:
        response = await self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)
        assert response.status == expect, await response.text()
        return await response.json() if response.status != 204 else None

    async def person(self, username: str) -> dict[str, str]:
        user = await self.call("POST", "/users", ADMIN, 201, json={"username": username, "name": username.title()})
        token = await self.call("POST", f"/users/{user['id']}/tokens", ADMIN, 201)
        return {"Authorization": f"Bearer {token['token']}", "id": user["id"]}

    async def hook(self, headers: dict[str, str], receiver: Receiver, name: str, **body: Any) -> dict[str, Any]:
        created = await self.call("POST", "/webhooks", _auth(headers), 201, json={"url": receiver.url(name), **body})
        receiver.expect_secrets(name, created["secret"])
        return created

    async def deliveries(self, headers: dict[str, str], hook: dict[str, Any]) -> list[dict[str, Any]]:
        return (await self.call("GET", f"/webhooks/{hook['id']}/deliveries", _auth(headers), 200))["items"]

    async def webhook(self, headers: dict[str, str], hook: dict[str, Any]) -> dict[str, Any]:
        return await self.call("GET", f"/webhooks/{hook['id']}", _auth(headers), 200)


def _auth(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}


async def _api(aiohttp_client: Any, setup: WorkerSetup, **settings: Any) -> Api:
    values: dict[str, Any] = {"secret_key": SECRET_KEY, "webhook_allowed_cidrs": ["127.0.0.1/32"], **settings}
    return Api(await aiohttp_client(init_app(setup.settings(**values))))


def _assert_verified(requests: list[Received], *secrets: str) -> None:
    for got in requests:
        assert got.verified == {s: (True, True) for s in secrets}, got.verified


@pytest.mark.parametrize("configuration", ["postgres_redis", "sqlite_embedded"])
async def test_events_reach_the_endpoints_that_want_them_signed_and_logged(
    configuration: str, request: pytest.FixtureRequest, processes: Processes, receiver: Receiver, aiohttp_client: Any
) -> None:
    setup: WorkerSetup = request.getfixturevalue(configuration)
    wait_for_worker(processes.worker(setup, env=webhook_env()))
    processes.beat(setup)
    api = await _api(aiohttp_client, setup)
    alice, bob, carol = await api.person("alice"), await api.person("bob"), await api.person("carol")
    everything = await api.hook(ADMIN, receiver, "admin")
    alices = await api.hook(alice, receiver, "alice", event_types=["message.created"])
    carols = await api.hook(carol, receiver, "carol")

    conversation = await api.call("POST", "/conversations", _auth(alice), 201, json={"user_id": bob["id"]})
    sent = await api.call("POST", f"/conversations/{conversation['id']}/messages", _auth(alice), 201, json={"content": "hi"})

    await eventually(lambda: len(receiver.requests("admin")) == 2 and receiver.requests("alice"),
                     what="the admin's and alice's deliveries", processes=processes)
    admin_got, [alice_got] = receiver.requests("admin"), receiver.requests("alice")
    _assert_verified(admin_got, everything["secret"])
    _assert_verified([alice_got], alices["secret"])
    by_type = {r.json["type"]: r.json for r in admin_got}
    assert set(by_type) == {"conversation.created", "message.created"}
    # The same payload the REST API answered with, plus an ordering sequence per conversation.
    assert by_type["message.created"]["data"] == {"message": sent}
    assert alice_got.json == by_type["message.created"]
    assert by_type["conversation.created"]["sequence"] < by_type["message.created"]["sequence"]
    assert by_type["conversation.created"]["data"]["conversation"]["id"] == conversation["id"]

    [logged] = await eventually(lambda: _with_status(api, alice, alices, "succeeded"), what="the log", processes=processes)
    assert (logged["id"], logged["event_type"]) == (alice_got.webhook_id, "message.created")
    [attempt] = logged["attempts"]
    assert (attempt["status_code"], attempt["response_excerpt"], attempt["error"]) == (200, "ok", None)
    assert attempt["duration_ms"] >= 0

    # Carol is in no conversation: only her test ping reaches her.
    await api.call("POST", f"/webhooks/{carols['id']}/test", _auth(carol), 202)
    await eventually(lambda: receiver.requests("carol"), what="carol's test ping", processes=processes)
    [ping] = receiver.requests("carol")
    _assert_verified([ping], carols["secret"])
    assert ping.json["type"] == "webhook.test" and ping.json["data"]["endpoint_id"] == carols["id"]
    assert [d["event_type"] for d in await api.deliveries(carol, carols)] == ["webhook.test"]

    # After a rotation both secrets sign, and each verifies the delivery on its own.
    rotated = await api.call("POST", f"/webhooks/{alices['id']}/secret/rotate", _auth(alice), 200)
    receiver.expect_secrets("alice", rotated["secret"], alices["secret"])
    await api.call("POST", f"/conversations/{conversation['id']}/messages", _auth(bob), 201, json={"content": "yo"})
    await eventually(lambda: len(receiver.requests("alice")) == 2, what="the delivery after rotation", processes=processes)
    after = receiver.requests("alice")[1]
    _assert_verified([after], rotated["secret"], alices["secret"])
    assert len(after.headers["webhook-signature"].split(" ")) == 2

    # A manual retry and a replay deliver again, under the same webhook-id (receivers deduplicate).
    await api.call("POST", f"/webhooks/{alices['id']}/deliveries/{logged['id']}/retry", _auth(alice), 202)
    await eventually(lambda: len(receiver.requests("alice")) == 3, what="the retried delivery", processes=processes)
    assert receiver.requests("alice")[2].webhook_id == logged["id"]
    replayed = await api.call("POST", f"/webhooks/{alices['id']}/replay", _auth(alice), 202,
                              params={"since": sent["created_at"]})
    assert replayed == {"queued": 2}
    await eventually(lambda: len(receiver.requests("alice")) == 5, what="the replayed deliveries", processes=processes)
    assert {r.webhook_id for r in receiver.requests("alice")[3:]} == {r.webhook_id for r in receiver.requests("alice")[:2]}


async def test_retries_retry_after_gone_redirects_and_long_failures(
    sqlite_embedded: WorkerSetup, processes: Processes, receiver: Receiver, aiohttp_client: Any
) -> None:
    setup = sqlite_embedded
    # The real first delays (immediately, then 5 s), then short ones so the schedule runs out soon.
    schedule = "0,5,1,1"
    wait_for_worker(processes.worker(setup, env=webhook_env(PARLEY_WEBHOOK_RETRY_SCHEDULE=schedule)))
    processes.beat(setup)
    api = await _api(aiohttp_client, setup, webhook_retry_schedule=[0, 5, 1, 1])
    alice, bob = await api.person("alice"), await api.person("bob")
    hooks = {
        name: await api.hook(alice, receiver, name, event_types=["message.created"])
        for name in ("flaky", "busy", "gone", "redirect", "failing")
    }
    admins = await api.hook(ADMIN, receiver, "admin", event_types=["endpoint.disabled"])
    receiver.script("flaky", Answer(500), Answer(500), Answer(200))
    receiver.script("busy", Answer(429, {"Retry-After": "8"}), Answer(200))
    receiver.script("gone", Answer(410))
    receiver.script("redirect", Answer(302, {"Location": receiver.url("target")}))
    receiver.script("failing", Answer(500))
    # "failing" has failed every delivery for six days already.
    with setup.engine.begin() as connection:
        connection.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == hooks["failing"]["id"])
            .values(failing_since=utcnow() - timedelta(days=6))
        )

    conversation = await api.call("POST", "/conversations", _auth(alice), 201, json={"user_id": bob["id"]})
    await api.call("POST", f"/conversations/{conversation['id']}/messages", _auth(alice), 201, json={"content": "hi"})

    def settled(name: str, status: str) -> Awaitable[list[dict[str, Any]]]:
        return _with_status(api, alice, hooks[name], status)

    [flaky] = await eventually(lambda: settled("flaky", "succeeded"), what="flaky to recover", processes=processes)
    assert [a["status_code"] for a in flaky["attempts"]] == [500, 500, 200]
    got = receiver.requests("flaky")
    assert len({r.webhook_id for r in got}) == 1 and got[0].webhook_id == flaky["id"]
    assert got[1].at - got[0].at >= 5.0  # the schedule's second delay, observed
    _assert_verified(got, hooks["flaky"]["secret"])

    [busy] = await eventually(lambda: settled("busy", "succeeded"), what="busy to accept", processes=processes)
    assert [a["status_code"] for a in busy["attempts"]] == [429, 200]
    first, second = receiver.requests("busy")
    assert second.at - first.at >= 8.0  # Retry-After, not the schedule's 5 s

    await eventually(lambda: settled("gone", "failed"), what="the 410 to fail the delivery", processes=processes)
    gone = await api.webhook(alice, hooks["gone"])
    assert gone["enabled"] is False and "410" in gone["disabled_reason"]
    assert len(receiver.requests("gone")) == 1

    [redirected] = await eventually(lambda: settled("redirect", "failed"), what="the redirects to run out", processes=processes)
    assert [a["status_code"] for a in redirected["attempts"]] == [302] * 4
    assert all("redirects are not followed" in a["error"] for a in redirected["attempts"])
    assert receiver.requests("target") == []

    failing = await eventually(
        lambda: _disabled(api, alice, hooks["failing"]), what="the long-failing endpoint to be disabled", processes=processes
    )
    assert "5 days" in failing["disabled_reason"]

    # Each disabled endpoint was announced to the admin's endpoint.
    await eventually(lambda: len(receiver.requests("admin")) == 2, what="two endpoint.disabled events", processes=processes)
    announced = {r.json["data"]["endpoint_id"]: r.json for r in receiver.requests("admin")}
    assert set(announced) == {hooks["gone"]["id"], hooks["failing"]["id"]}
    assert {a["type"] for a in announced.values()} == {"endpoint.disabled"}
    _assert_verified(receiver.requests("admin"), admins["secret"])
    assert "disabled" in processes.output()  # the log line


async def _with_status(api: Api, owner: dict[str, str], hook: dict[str, Any], status: str) -> list[dict[str, Any]]:
    return [d for d in await api.deliveries(owner, hook) if d["status"] == status]


async def _disabled(api: Api, owner: dict[str, str], hook: dict[str, Any]) -> dict[str, Any] | None:
    shown = await api.webhook(owner, hook)
    return shown if not shown["enabled"] else None


async def test_a_hanging_receiver_does_not_delay_a_healthy_one(
    postgres_redis: WorkerSetup, processes: Processes, receiver: Receiver, aiohttp_client: Any
) -> None:
    setup = postgres_redis
    cap = 2
    # One worker process: the hanging deliveries and the healthy ones share everything it has.
    env = webhook_env(PARLEY_WEBHOOK_TIMEOUT_SECONDS="60", PARLEY_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT=str(cap))
    wait_for_worker(processes.worker(setup, env=env, concurrency=1))
    processes.beat(setup)
    api = await _api(aiohttp_client, setup)
    alice, bob = await api.person("alice"), await api.person("bob")
    hanging = await api.hook(alice, receiver, "hanging", event_types=["message.created"])
    await api.hook(alice, receiver, "healthy", event_types=["message.created"])
    receiver.script("hanging", Answer(hang=True))

    conversation = await api.call("POST", "/conversations", _auth(alice), 201, json={"user_id": bob["id"]})
    for n in range(8):
        await api.call("POST", f"/conversations/{conversation['id']}/messages", _auth(alice), 201, json={"content": f"m{n}"})

    await eventually(lambda: len(receiver.requests("healthy")) == 8, what="all healthy deliveries", processes=processes)
    # Meanwhile the hanging endpoint holds exactly its cap of deliveries, none of them answered yet.
    assert len(receiver.requests("hanging")) == cap
    log = await api.deliveries(alice, hanging)
    assert sorted(d["status"] for d in log) == ["delivering"] * cap + ["pending"] * (8 - cap)
    assert all(d["attempts"] == [] for d in log)


async def test_a_worker_killed_mid_delivery_delivers_it_once_more(
    postgres_redis: WorkerSetup, processes: Processes, receiver: Receiver, aiohttp_client: Any
) -> None:
    setup = postgres_redis
    env = webhook_env(PARLEY_WEBHOOK_TIMEOUT_SECONDS="3")  # the claim lapses 3 + 5 s after it was taken
    first = processes.worker(setup, env=env)
    wait_for_worker(first)
    processes.beat(setup)
    api = await _api(aiohttp_client, setup)
    alice, bob = await api.person("alice"), await api.person("bob")
    hook = await api.hook(alice, receiver, "slow", event_types=["message.created"])
    receiver.script("slow", Answer(hang=True), Answer(200))

    conversation = await api.call("POST", "/conversations", _auth(alice), 201, json={"user_id": bob["id"]})
    await api.call("POST", f"/conversations/{conversation['id']}/messages", _auth(alice), 201, json={"content": "hi"})
    await eventually(lambda: receiver.requests("slow"), what="the first attempt to arrive", processes=processes)
    first.kill_group()  # mid-delivery: the request is out, no answer recorded
    wait_for_worker(processes.worker(setup, env=env))

    [delivery] = await eventually(
        lambda: _with_status(api, alice, hook, "succeeded"), what="the delivery to complete", processes=processes
    )
    got = receiver.requests("slow")
    assert len(got) == 2 and {r.webhook_id for r in got} == {delivery["id"]}
    assert delivery["attempt_count"] == 2
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [(None, LOST_ATTEMPT), (200, None)]
    _assert_verified(got, hook["secret"])
