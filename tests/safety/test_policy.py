"""PARLEY_CONVERSATION_POLICY: open, relationships (managed over the admin API) and webhook (the
host product asked, signed and SSRF-guarded, answers cached, failing closed or open), on every
entry path: REST start and send, and a worker calling send_message / contact_user directly."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.errors import Forbidden
from parley.models import Event
from parley.services.contact import contact_user
from parley.services.conversations import OtherUser
from parley.services.messages import MessageDraft, send_message
from parley.services.policy import Action
from tests.api.conftest import ADMIN, Person, provision
from tests.realtime.conftest import connect, frame_where, of_type
from tests.safety.conftest import POLICY_SECRET, AppFor, error_of, load_user
from tests.webhooks.receiver import Answer, Receiver
from webhooks.policy import consult_sync

CONVERSATIONS = "/api/v1/conversations"


async def _start(client: TestClient, a: Person, b: Person, **extra: Any) -> Any:
    return await client.post(CONVERSATIONS, json={"user_id": b.id, **extra}, headers=a.auth)


async def _send(client: TestClient, a: Person, conversation_id: str, content: str = "hello") -> Any:
    return await client.post(f"{CONVERSATIONS}/{conversation_id}/messages", json={"content": content}, headers=a.auth)


async def _relate(client: TestClient, reference: str, a: Person, b: Person, **fields: Any) -> Any:
    return await client.put(
        f"/api/v1/relationships/{reference}", json={"user_ids": [a.id, b.id], **fields}, headers=ADMIN
    )


def _worker_send(sessions: sessionmaker[Session], settings: Settings, sender_id: str, conversation_id: str, text: str) -> Any:
    sender = load_user(sessions, sender_id)
    with sessions() as session:
        return send_message(session, settings, sender, conversation_id, MessageDraft(content=text))[0]


async def test_the_open_policy_lets_anyone_start_and_send_on_every_path(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = await app_for()
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    started = await _start(client, alice, bob)
    assert started.status == 201
    conversation = await started.json()
    assert conversation["can_send"] is True and conversation["cannot_send_reason"] is None
    assert (await _send(client, alice, conversation["id"])).status == 201
    assert _worker_send(sessions, settings, bob.id, conversation["id"], "from a worker").content == "from a worker"


async def test_relationships_gate_starting_and_sending_and_ending_one_greys_the_conversation_out(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = await app_for(conversation_policy="relationships")
    policy_settings = settings.model_copy(update={"conversation_policy": "relationships"})
    alice, bob, carol = [await provision(client, n) for n in ("alice", "bob", "carol")]

    refused = await _start(client, alice, bob)
    assert refused.status == 403
    error = await error_of(refused)
    assert error["code"] == "policy_denied" and error["details"]["reason"] == "no_active_relationship"
    # A worker's first contact is refused alike, and nothing was created.
    with sessions() as session, pytest.raises(Forbidden) as denied:
        contact_user(session, policy_settings, load_user(sessions, alice.id), OtherUser(user_id=bob.id))
    assert denied.value.code == "policy_denied"

    created = await _relate(client, "contract-1", alice, bob)
    assert created.status == 201, await created.text()
    shown = await created.json()
    assert sorted(shown["user_ids"]) == sorted([alice.id, bob.id]) and shown["active"] is True
    assert (await _relate(client, "contract-1", alice, bob)).status == 200
    listed = await (await client.get(f"/api/v1/relationships?user_id={bob.id}", headers=ADMIN)).json()
    assert [r["reference"] for r in listed["items"]] == ["contract-1"]
    assert (await (await client.get(f"/api/v1/relationships?user_id={carol.id}", headers=ADMIN)).json())["items"] == []
    assert (await client.get("/api/v1/relationships", headers=alice.auth)).status == 403

    started = await _start(client, alice, bob, message={"content": "hi Bob"})
    assert started.status == 201, await started.text()
    conversation = await started.json()
    assert conversation["can_send"] is True
    cid = conversation["id"]
    assert (await _send(client, bob, cid, "hi Alice")).status == 201
    _worker_send(sessions, policy_settings, alice.id, cid, "from a worker")
    # Carol shares no relationship with either.
    assert (await _start(client, carol, alice)).status == 403

    # The contract ends mid-conversation: both members hear of it at once.
    alice_ws, bob_ws = await connect(client, alice), await connect(client, bob)
    ended = await _relate(client, "contract-1", alice, bob, active=False)
    assert ended.status == 200
    for ws in (alice_ws, bob_ws):
        frame = await frame_where(ws, of_type("conversation.policy_changed"))
        assert frame["conversation_id"] == cid
        assert frame["data"] == {"conversation_id": cid, "can_send": False, "cannot_send_reason": "relationship_ended"}
    with sessions() as session:
        event = session.scalar(select(Event).where(Event.type == "conversation.policy_changed"))
        assert event is not None and event.audience == sorted([alice.id, bob.id])

    refused = await _send(client, alice, cid)
    assert refused.status == 403
    assert (await error_of(refused))["details"] == {"reason": "relationship_ended"}
    with pytest.raises(Forbidden) as denied:
        _worker_send(sessions, policy_settings, bob.id, cid, "too late")
    assert denied.value.code == "policy_denied"
    # The history stays readable by both (PARLEY_POLICY_READ_AFTER_END, default true).
    for person in (alice, bob):
        history = await client.get(f"{CONVERSATIONS}/{cid}/messages", headers=person.auth)
        assert history.status == 200
        assert [m["content"] for m in (await history.json())["items"]] == ["hi Bob", "hi Alice", "from a worker"]
        shown = await (await client.get(f"{CONVERSATIONS}/{cid}", headers=person.auth)).json()
        assert shown["can_send"] is False and shown["cannot_send_reason"] == "relationship_ended"
        inbox = await (await client.get(CONVERSATIONS, headers=person.auth)).json()
        assert inbox["items"][0]["can_send"] is False

    # Another relationship of the same pair lets them talk again; expired ones do not count.
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert (await _relate(client, "order-7", alice, bob, expires_at=past)).status == 201
    assert (await _send(client, alice, cid)).status == 403
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await _relate(client, "order-7", alice, bob, expires_at=future)).status == 200
    back = await frame_where(bob_ws, of_type("conversation.policy_changed"))
    assert back["data"]["can_send"] is True
    assert (await _send(client, alice, cid)).status == 201
    # Deleting it ends it again.
    assert (await client.delete("/api/v1/relationships/order-7", headers=ADMIN)).status == 204
    assert (await client.delete("/api/v1/relationships/order-7", headers=ADMIN)).status == 404
    assert (await _send(client, alice, cid)).status == 403


async def test_history_closes_after_the_end_when_read_after_end_is_off(app_for: AppFor) -> None:
    client = await app_for(conversation_policy="relationships", policy_read_after_end=False)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    assert (await _relate(client, "c-2", alice, bob)).status == 201
    cid = (await (await _start(client, alice, bob)).json())["id"]
    assert (await client.get(f"{CONVERSATIONS}/{cid}/messages", headers=bob.auth)).status == 200
    assert (await _relate(client, "c-2", alice, bob, active=False)).status == 200
    closed = await client.get(f"{CONVERSATIONS}/{cid}/messages", headers=bob.auth)
    assert closed.status == 403 and (await error_of(closed))["code"] == "policy_denied"


async def test_relationship_input_is_checked(app_for: AppFor) -> None:
    client = await app_for(conversation_policy="relationships")
    alice = await provision(client, "alice")
    same = await client.put("/api/v1/relationships/x", json={"user_ids": [alice.id, alice.id]}, headers=ADMIN)
    assert same.status == 422
    unknown = await client.put(
        "/api/v1/relationships/x", json={"user_ids": [alice.id, "01ARZ3NDEKTSV4RRFFQ69G5FAV"]}, headers=ADMIN
    )
    assert unknown.status == 404 and (await error_of(unknown))["code"] == "user_not_found"
    bad_reference = await client.put("/api/v1/relationships/a%20b", json={"user_ids": [alice.id, alice.id]}, headers=ADMIN)
    assert bad_reference.status in (404, 422)


# --- the webhook policy --------------------------------------------------------------------------


def _webhook_changes(receiver: Receiver, **more: Any) -> dict[str, Any]:
    return {
        "conversation_policy": "webhook",
        "policy_url": receiver.url("policy"),
        "policy_secret": POLICY_SECRET,
        "webhook_allowed_cidrs": ["127.0.0.1/32"],
        "policy_timeout_seconds": 1.0,
        **more,
    }


def _settings_with(settings: Settings, changes: dict[str, Any]) -> Settings:
    from pydantic import SecretStr

    return settings.model_copy(update={**changes, "policy_secret": SecretStr(changes["policy_secret"])})


async def _app_with_webhook(app_for: AppFor, receiver: Receiver, **more: Any) -> TestClient:
    from pydantic import SecretStr

    changes = _webhook_changes(receiver, **more)
    return await app_for(**{**changes, "policy_secret": SecretStr(changes["policy_secret"])})


async def test_the_policy_webhook_allows_with_signed_questions_and_its_answers_are_cached(
    app_for: AppFor, receiver: Receiver, sessions: sessionmaker[Session], settings: Settings
) -> None:
    receiver.script("policy", Answer(body='{"allow": true}'))
    receiver.expect_secrets("policy", POLICY_SECRET)
    client = await _app_with_webhook(app_for, receiver, policy_cache_seconds=60)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")

    started = await _start(client, alice, bob, message={"content": "first"})
    assert started.status == 201, await started.text()
    cid = (await started.json())["id"]
    asked = receiver.requests("policy")
    assert sorted(r.json["action"] for r in asked) == ["send", "start"]
    for request in asked:
        assert request.json["from"] == alice.id and request.json["to"] == bob.id
        assert set(request.json) == {"action", "from", "to", "conversation_id"}
        assert request.verified[POLICY_SECRET] == (True, True)

    # Cached: more sends ask nothing more.
    assert (await _send(client, alice, cid, "second")).status == 201
    assert (await _send(client, alice, cid, "third")).status == 201
    assert len(receiver.requests("policy")) == 2
    # Bob's first send is a question of its own, with the conversation named.
    assert (await _send(client, bob, cid, "reply")).status == 201
    bobs = [r.json for r in receiver.requests("policy") if r.json["from"] == bob.id]
    assert bobs == [{"action": "send", "from": bob.id, "to": alice.id, "conversation_id": cid}]

    # A worker's send uses the cached answer too (and consult_sync asks nothing new).
    worker_settings = _settings_with(settings, _webhook_changes(receiver, policy_cache_seconds=60))
    await asyncio.to_thread(consult_sync, sessions, worker_settings, load_user(sessions, alice.id), [Action.SEND], conversation_id=cid)
    assert len(receiver.requests("policy")) == 3
    assert _worker_send(sessions, worker_settings, alice.id, cid, "from a worker").content == "from a worker"


async def test_without_a_cache_every_send_asks(app_for: AppFor, receiver: Receiver) -> None:
    receiver.script("policy", Answer(body='{"allow": true}'))
    client = await _app_with_webhook(app_for, receiver, policy_cache_seconds=0)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    cid = (await (await _start(client, alice, bob)).json())["id"]
    for text in ("one", "two", "three"):
        assert (await _send(client, alice, cid, text)).status == 201
    assert [r.json["action"] for r in receiver.requests("policy")] == ["start", "send", "send", "send"]


async def test_the_policy_webhook_denies_with_its_reason(
    app_for: AppFor, receiver: Receiver, sessions: sessionmaker[Session], settings: Settings
) -> None:
    receiver.script("policy", Answer(body=json.dumps({"allow": False, "reason": "no active contract"})))
    client = await _app_with_webhook(app_for, receiver)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    refused = await _start(client, alice, bob)
    assert refused.status == 403
    error = await error_of(refused)
    assert error["code"] == "policy_denied" and error["details"] == {"reason": "no active contract"}
    assert (await client.get(CONVERSATIONS, headers=alice.auth)).status == 200

    # A worker asks first, and is refused the same way.
    worker_settings = _settings_with(settings, _webhook_changes(receiver))
    alice_user = load_user(sessions, alice.id)
    await asyncio.to_thread(consult_sync, sessions, worker_settings, alice_user, [Action.START], other_user_id=bob.id)
    with sessions() as session, pytest.raises(Forbidden) as denied:
        contact_user(session, worker_settings, alice_user, OtherUser(user_id=bob.id))
    assert denied.value.details == {"reason": "no active contract"}


async def test_an_existing_conversation_denied_later_greys_out_and_refuses_sends(app_for: AppFor, receiver: Receiver) -> None:
    receiver.script("policy", Answer(body='{"allow": true}'), Answer(body='{"allow": true}'),
                    Answer(body='{"allow": false, "reason": "contract closed"}'))
    client = await _app_with_webhook(app_for, receiver, policy_cache_seconds=0)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    cid = (await (await _start(client, alice, bob)).json())["id"]
    assert (await _send(client, alice, cid)).status == 201
    refused = await _send(client, alice, cid)
    assert refused.status == 403 and (await error_of(refused))["details"]["reason"] == "contract closed"
    shown = await (await client.get(f"{CONVERSATIONS}/{cid}", headers=alice.auth)).json()
    assert shown["can_send"] is False and shown["cannot_send_reason"] == "contract closed"


@pytest.mark.parametrize("fail_open", [False, True])
async def test_a_policy_webhook_that_times_out_fails_closed_unless_told_otherwise(
    app_for: AppFor, receiver: Receiver, sessions: sessionmaker[Session], settings: Settings, fail_open: bool
) -> None:
    receiver.script("policy", Answer(hang=True))
    client = await _app_with_webhook(app_for, receiver, policy_timeout_seconds=0.3, policy_fail_open=fail_open)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    started = await _start(client, alice, bob)
    assert len(receiver.requests("policy")) == 1
    if fail_open:
        assert started.status == 201
        cid = (await started.json())["id"]
        assert (await _send(client, alice, cid)).status == 201
    else:
        assert started.status == 403
        assert (await error_of(started)) == {
            "code": "policy_denied", "message": "the conversation policy does not allow this",
            "details": {"reason": "policy_unavailable"},
        }
    # A worker that could not ask (no answer kept) is refused or let through alike.
    worker_settings = _settings_with(settings, _webhook_changes(receiver, policy_fail_open=fail_open))
    carol = await provision(client, "carol")
    with sessions() as session:
        if fail_open:
            contact_user(session, worker_settings, load_user(sessions, carol.id), OtherUser(user_id=bob.id))
        else:
            with pytest.raises(Forbidden):
                contact_user(session, worker_settings, load_user(sessions, carol.id), OtherUser(user_id=bob.id))


async def test_a_policy_answer_that_is_not_json_counts_as_unavailable(app_for: AppFor, receiver: Receiver) -> None:
    receiver.script("policy", Answer(status=500, body="oops"))
    client = await _app_with_webhook(app_for, receiver)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    refused = await _start(client, alice, bob)
    assert refused.status == 403 and (await error_of(refused))["details"]["reason"] == "policy_unavailable"


def test_the_webhook_policy_needs_a_url_and_a_secret() -> None:
    from parley.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="PARLEY_POLICY_URL"):
        load_settings(conversation_policy="webhook")


async def test_an_expiring_relationship_is_announced_once_by_beats_look(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    from parley.services.policy import announce_expired_relationships
    from workers.celery_app import create_celery_app
    from workers.task_names import RELATIONSHIP_EXPIRY_TASK

    client = await app_for(conversation_policy="relationships")
    policy_settings = settings.model_copy(update={"conversation_policy": "relationships"})
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert (await _relate(client, "gig-1", alice, bob, expires_at=soon.isoformat())).status == 201
    cid = (await (await _start(client, alice, bob)).json())["id"]
    bob_ws = await connect(client, bob)

    with sessions() as session:
        assert announce_expired_relationships(session, policy_settings) == 0  # not yet
    later = soon + timedelta(seconds=1)
    with sessions() as session:
        assert announce_expired_relationships(session, policy_settings, later) == 1
    with sessions() as session:
        assert announce_expired_relationships(session, policy_settings, later) == 0  # once
    frame = await frame_where(bob_ws, of_type("conversation.policy_changed"))
    assert frame["data"] == {"conversation_id": cid, "can_send": False, "cannot_send_reason": "relationship_ended"}
    with sessions() as session:
        events = session.scalars(select(Event).where(Event.type == "conversation.policy_changed")).all()
        assert len(events) == 1

    # Renewed by the host product, it is announced again at its next expiry.
    assert (await _relate(client, "gig-1", alice, bob, expires_at=(later + timedelta(days=1)).isoformat())).status == 200
    with sessions() as session:
        assert announce_expired_relationships(session, policy_settings, later + timedelta(days=2)) == 1
    assert RELATIONSHIP_EXPIRY_TASK in create_celery_app(policy_settings).tasks
