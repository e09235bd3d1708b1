"""Webhook endpoints over HTTP: registration, ownership, secrets, the SSRF check at registration,
tests, retries and replays as the delivery log shows them (delivery itself: tests/workers)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, text

from parley.config import Settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.models import Event, WebhookEndpoint
from parley.services.webhook_deliveries import fan_out
from parley.services.webhook_matching import EventFacts
from tests import media_samples
from tests.api.conftest import ADMIN, MakePerson, send, start_conversation
from tests.api.uploads import process_uploads, upload
from workers.webhook_tasks import WEBHOOK_CONSUMER

WEBHOOKS = "/api/v1/webhooks"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The receiver URLs below are on 127.0.0.1, which only an allowlist lets through.
    return settings.model_copy(update={"webhook_allowed_cidrs": ["127.0.0.1/32"]})


async def _create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(WEBHOOKS, json={"url": "http://127.0.0.1:9/hook", **body}, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def _error(response: Any) -> str:
    return str((await response.json())["error"]["code"])


async def test_an_endpoint_is_created_with_a_secret_shown_once(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    created = await _create(client, alice.auth, description="CRM", event_types=["message.created"])

    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert created["owner_id"] == alice.id and created["enabled"] is True
    assert created["event_types"] == ["message.created"]
    shown = await (await client.get(f"{WEBHOOKS}/{created['id']}", headers=alice.auth)).json()
    assert "secret" not in shown and shown["description"] == "CRM"
    listed = await (await client.get(WEBHOOKS, headers=alice.auth)).json()
    assert [e["id"] for e in listed["items"]] == [created["id"]]


async def test_signing_secrets_are_encrypted_at_rest(client: TestClient, make_person: MakePerson, settings: Settings) -> None:
    alice = await make_person("alice")
    created = await _create(client, alice.auth)
    engine = create_sync_db_engine(settings)
    try:
        with engine.connect() as connection:
            stored = connection.execute(select(WebhookEndpoint.secret_encrypted)).scalar_one()
            dump = " ".join(str(v) for v in connection.execute(text("SELECT * FROM webhook_endpoints")).one())
    finally:
        engine.dispose()
    raw = created["secret"].removeprefix("whsec_")
    assert raw not in dump and raw not in stored


async def test_each_owner_sees_and_changes_only_its_own_endpoints(client: TestClient, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    mine = await _create(client, alice.auth)
    admins = await _create(client, ADMIN)
    assert admins["owner_id"] is None

    for path in (f"{WEBHOOKS}/{mine['id']}", f"{WEBHOOKS}/{mine['id']}/deliveries"):
        for headers in (bob.auth, ADMIN):
            response = await client.get(path, headers=headers)
            assert (response.status, await _error(response)) == (404, "webhook_not_found")
    for method, suffix in (("PATCH", ""), ("DELETE", ""), ("POST", "/secret/rotate"), ("POST", "/test")):
        response = await client.request(method, f"{WEBHOOKS}/{mine['id']}{suffix}", json={}, headers=bob.auth)
        assert response.status == 404, (method, suffix)
    assert [e["id"] for e in (await (await client.get(WEBHOOKS, headers=bob.auth)).json())["items"]] == []
    assert [e["id"] for e in (await (await client.get(WEBHOOKS, headers=ADMIN)).json())["items"]] == [admins["id"]]
    anonymous = await client.get(WEBHOOKS)
    assert anonymous.status == 401


async def test_an_endpoint_is_changed_and_deleted(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    created = await _create(client, alice.auth)
    path = f"{WEBHOOKS}/{created['id']}"

    patched = await client.patch(path, json={"enabled": False, "event_types": ["*", "message.read"]}, headers=alice.auth)
    assert patched.status == 200
    body = await patched.json()
    assert (body["enabled"], body["event_types"]) == (False, ["*"])

    assert (await client.delete(path, headers=alice.auth)).status == 204
    assert (await client.get(path, headers=alice.auth)).status == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "http://10.0.0.1/hook"}, "url_not_allowed"),
        ({"url": "http://0x0a000001/hook"}, "url_not_allowed"),
        ({"url": "ftp://example.com/hook"}, "validation_error"),
        ({"url": "http://127.0.0.1:9/hook", "event_types": ["message.sent"]}, "unknown_event_type"),
        ({"url": "http://127.0.0.1:9/hook", "event_types": []}, "validation_error"),
    ],
)
async def test_refused_registrations_name_the_reason(
    client: TestClient, make_person: MakePerson, body: dict[str, Any], code: str
) -> None:
    alice = await make_person("alice")
    response = await client.post(WEBHOOKS, json=body, headers=alice.auth)
    assert (response.status, await _error(response)) == (422, code)


async def test_a_url_changed_to_a_private_address_is_refused(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    created = await _create(client, alice.auth)
    response = await client.patch(
        f"{WEBHOOKS}/{created['id']}", json={"url": "http://169.254.169.254/latest/meta-data"}, headers=alice.auth
    )
    assert (response.status, await _error(response)) == (422, "url_not_allowed")
    assert "link-local" in (await response.json())["error"]["details"]["reason"]


async def test_rotation_returns_a_new_secret_and_keeps_the_old_one_for_a_day(
    client: TestClient, make_person: MakePerson
) -> None:
    alice = await make_person("alice")
    created = await _create(client, alice.auth)
    rotated = await client.post(f"{WEBHOOKS}/{created['id']}/secret/rotate", headers=alice.auth)
    assert rotated.status == 200 and rotated.headers["Cache-Control"] == "no-store"
    body = await rotated.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    expires = datetime.fromisoformat(body["previous_secret_expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)


async def test_test_replay_and_retry_schedule_deliveries(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    hook = await _create(client, alice.auth, event_types=["message.created"])
    path = f"{WEBHOOKS}/{hook['id']}"
    before = datetime.now(UTC)
    conversation = await start_conversation(client, alice, bob)
    await send(client, alice, conversation["id"], "one")
    await send(client, bob, conversation["id"], "two")

    tested = await client.post(f"{path}/test", headers=alice.auth)
    assert tested.status == 202
    engine = create_sync_db_engine(settings)
    try:
        with engine.connect() as connection:
            types = list(connection.scalars(select(Event.type).order_by(Event.id)))
    finally:
        engine.dispose()
    assert types[-1] == "webhook.test"

    # No worker runs here: the replay itself writes the deliveries, one per message.created event.
    replayed = await client.post(f"{path}/replay", params={"since": before.isoformat()}, headers=alice.auth)
    assert (replayed.status, await replayed.json()) == (202, {"queued": 2})
    log = await (await client.get(f"{path}/deliveries", headers=alice.auth)).json()
    assert [(d["event_type"], d["status"], d["attempt_count"]) for d in log["items"]] == [("message.created", "pending", 0)] * 2

    retried = await client.post(f"{path}/deliveries/{log['items'][0]['id']}/retry", headers=alice.auth)
    assert retried.status == 202 and (await retried.json())["status"] == "pending"
    missing = await client.post(f"{path}/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry", headers=alice.auth)
    assert (missing.status, await _error(missing)) == (404, "delivery_not_found")
    bad_since = await client.post(f"{path}/replay", params={"since": "yesterday"}, headers=alice.auth)
    assert bad_since.status == 422


async def test_bobs_endpoint_is_not_replayed_alices_other_conversations(
    client: TestClient, make_person: MakePerson
) -> None:
    alice, bob, carol = await make_person("alice"), await make_person("bob"), await make_person("carol")
    hook = await _create(client, bob.auth)
    before = datetime.now(UTC)
    with_bob = await start_conversation(client, alice, bob)
    with_carol = await start_conversation(client, alice, carol)
    await send(client, alice, with_bob["id"], "for bob")
    await send(client, alice, with_carol["id"], "not for bob")

    replayed = await client.post(f"{WEBHOOKS}/{hook['id']}/replay", params={"since": before.isoformat()}, headers=bob.auth)
    # conversation.created and message.created of the conversation with bob only
    assert (await replayed.json()) == {"queued": 2}


async def test_nothing_is_sent_to_a_disabled_endpoint(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    hook = await _create(client, alice.auth, enabled=False)
    path = f"{WEBHOOKS}/{hook['id']}"
    for suffix, params in (("/test", {}), ("/replay", {"since": "2026-01-01T00:00:00Z"})):
        response = await client.post(path + suffix, params=params, headers=alice.auth)
        assert (response.status, await _error(response)) == (409, "webhook_disabled")
    enabled = await client.patch(path, json={"enabled": True}, headers=alice.auth)
    assert (await enabled.json())["enabled"] is True
    assert (await client.post(f"{path}/test", headers=alice.auth)).status == 202


async def test_a_replay_sends_exactly_what_live_delivery_sent(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    """Two admin endpoints for every type: one fed by the live fan-out consumer, the other by a
    replay of the same events. Internal events (attachment.uploaded, attachment.deleted) go to neither."""
    alice, bob = await make_person("alice"), await make_person("bob")
    live = await _create(client, ADMIN, event_types=["*"])
    replayed = await _create(client, ADMIN, event_types=["*"], enabled=False)  # the live fan-out skips it
    before = datetime.now(UTC)
    conversation = await start_conversation(client, alice, bob)
    uploaded = await upload(client, alice, "chart.png", media_samples.png(40, 30))
    sent = await send(client, alice, conversation["id"], "see attached", attachment_ids=[uploaded["id"]])
    process_uploads(settings)  # attachment.ready
    assert (await client.delete(f"/api/v1/messages/{sent['id']}", headers=alice.auth)).status == 200

    engine = create_sync_db_engine(settings)
    try:
        with sync_session_factory(engine)() as session, session.begin():
            events = list(session.scalars(select(Event).where(Event.created_at >= before).order_by(Event.id)))
            assert {"attachment.uploaded", "attachment.deleted"} <= {e.type for e in events}
            for event in events:  # what the webhooks consumer does for each event it takes
                if event.type in WEBHOOK_CONSUMER.event_types:
                    fan_out(session, EventFacts(event.id, event.type, event.payload, frozenset(event.audience)))
    finally:
        engine.dispose()
    assert (await client.patch(f"{WEBHOOKS}/{replayed['id']}", json={"enabled": True}, headers=ADMIN)).status == 200
    queued = await client.post(f"{WEBHOOKS}/{replayed['id']}/replay", params={"since": before.isoformat()}, headers=ADMIN)
    assert queued.status == 202

    async def sent_to(hook: dict[str, Any]) -> list[tuple[int, str]]:
        log = await (await client.get(f"{WEBHOOKS}/{hook['id']}/deliveries", headers=ADMIN)).json()
        return sorted((d["event_id"], d["event_type"]) for d in log["items"])

    live_sent = await sent_to(live)
    assert [t for _, t in live_sent] == [
        "conversation.created", "message.created", "attachment.ready", "message.deleted"
    ]
    assert await sent_to(replayed) == live_sent
    assert (await queued.json())["queued"] == len(live_sent)
