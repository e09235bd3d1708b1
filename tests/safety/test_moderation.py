"""Reports, moderator removal, suspension (one node: tests/realtime/test_suspension_cluster.py has
the cluster), the dispute export with retention off and on, and beat's purge of retained text."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.errors import Forbidden
from parley.services.messages import MessageDraft, send_message
from parley.models import Event, utcnow
from parley.services.contact_info import MASK
from parley.services.messages import DELETED_CONTENT
from parley.services.moderation import REMOVED_CONTENT, purge_retained
from tests.api.conftest import ADMIN, Person, provision, send, start_conversation
from tests.realtime.conftest import connect, frame_where, of_type
from tests.safety.conftest import AppFor, error_of, load_user
from workers.celery_app import create_celery_app
from workers.task_names import PURGE_DELETED_TASK


async def _pair(client: TestClient) -> tuple[Person, Person, str]:
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    return alice, bob, (await start_conversation(client, alice, bob))["id"]


async def test_members_report_messages_and_the_admin_lists_and_resolves_them(
    app_for: AppFor, sessions: sessionmaker[Session]
) -> None:
    client = await app_for()
    alice, bob, cid = await _pair(client)
    carol = await provision(client, "carol")
    message = await send(client, alice, cid, "rude words")

    reported = await client.post(f"/api/v1/messages/{message['id']}/report", json={"reason": "abusive"}, headers=bob.auth)
    assert reported.status == 201, await reported.text()
    report = await reported.json()
    assert (report["message_id"], report["conversation_id"], report["reporter_id"]) == (message["id"], cid, bob.id)
    assert report["status"] == "open" and report["reason"] == "abusive"
    stranger = await client.post(f"/api/v1/messages/{message['id']}/report", json={"reason": "x"}, headers=carol.auth)
    assert stranger.status == 404
    blank = await client.post(f"/api/v1/messages/{message['id']}/report", json={"reason": "  "}, headers=bob.auth)
    assert blank.status == 422
    with sessions() as session:
        event = session.scalar(select(Event).where(Event.type == "message.reported"))
        assert event is not None and event.audience == [] and event.payload["report"]["id"] == report["id"]

    listed = await (await client.get("/api/v1/admin/reports?status=open", headers=ADMIN)).json()
    assert [r["id"] for r in listed["items"]] == [report["id"]]
    assert (await client.get("/api/v1/admin/reports", headers=bob.auth)).status == 403
    resolved = await client.post(f"/api/v1/admin/reports/{report['id']}/resolve", json={"resolution": "warned"}, headers=ADMIN)
    assert resolved.status == 200
    shown = await resolved.json()
    assert shown["status"] == "resolved" and shown["resolution"] == "warned" and shown["resolved_at"]
    assert (await (await client.get("/api/v1/admin/reports?status=open", headers=ADMIN)).json())["items"] == []
    assert len((await (await client.get("/api/v1/admin/reports?status=resolved", headers=ADMIN)).json())["items"]) == 1
    missing = await client.post("/api/v1/admin/reports/01ARZ3NDEKTSV4RRFFQ69G5FAV/resolve", headers=ADMIN)
    assert missing.status == 404


async def test_a_moderator_removes_a_message_for_both_members(app_for: AppFor) -> None:
    client = await app_for()
    alice, bob, cid = await _pair(client)
    bob_ws = await connect(client, bob)
    message = await send(client, alice, cid, "spam", attachments=[{"name": "x.pdf", "url": "https://files.example.com/x.pdf"}])
    removed = await client.post(f"/api/v1/admin/messages/{message['id']}/remove", headers=ADMIN)
    assert removed.status == 200
    shown = await removed.json()
    assert shown["content"] == REMOVED_CONTENT and shown["attachments"] == [] and shown["deleted_at"]
    frame = await frame_where(bob_ws, of_type("message.deleted"))
    assert frame["data"]["message"]["content"] == REMOVED_CONTENT
    for person in (alice, bob):
        history = await (await client.get(f"/api/v1/conversations/{cid}/messages", headers=person.auth)).json()
        assert [(m["content"], m["attachments"]) for m in history["items"]] == [(REMOVED_CONTENT, [])]
    assert (await client.post(f"/api/v1/admin/messages/{message['id']}/remove", headers=ADMIN)).status == 200
    assert (await client.post(f"/api/v1/admin/messages/{message['id']}/remove", headers=alice.auth)).status == 403


async def test_a_suspended_users_tokens_get_401_and_their_websocket_closes(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = await app_for(token_cache_seconds=300)
    alice, bob, cid = await _pair(client)
    assert (await client.get("/api/v1/me", headers=alice.auth)).status == 200  # cached now
    ticket = (await (await client.post("/api/v1/ws/tickets", headers=alice.auth)).json())["ticket"]
    alice_ws = await connect(client, alice)

    suspended = await client.post(f"/api/v1/admin/users/{alice.id}/suspend", headers=ADMIN)
    assert suspended.status == 200 and (await suspended.json())["suspended"] is True
    while (message := await alice_ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
        pass
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4003
    refused = await client.get("/api/v1/me", headers=alice.auth)
    assert refused.status == 401 and (await error_of(refused))["code"] == "suspended"
    assert (await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=alice.auth)).status == 401
    by_ticket = await client.get("/api/v1/ws", params={"ticket": ticket})
    assert by_ticket.status == 401 and (await error_of(by_ticket))["code"] == "suspended"
    assert (await client.get("/api/v1/me", headers=bob.auth)).status == 200

    # A worker acting for her is refused too.
    with sessions() as session, pytest.raises(Forbidden) as denied:
        send_message(session, settings, load_user(sessions, alice.id), cid, MessageDraft(content="from a worker"))
    assert denied.value.code == "suspended"

    lifted = await client.post(f"/api/v1/admin/users/{alice.id}/unsuspend", headers=ADMIN)
    assert lifted.status == 200 and (await lifted.json()) == {"user_id": alice.id, "suspended": False, "suspended_at": None}
    assert (await client.get("/api/v1/me", headers=alice.auth)).status == 200
    assert (await client.post("/api/v1/admin/users/01ARZ3NDEKTSV4RRFFQ69G5FAV/suspend", headers=ADMIN)).status == 404


async def _export(client: TestClient, cid: str) -> dict[str, object]:
    response = await client.get(f"/api/v1/admin/conversations/{cid}/export", headers=ADMIN)
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_the_export_without_retention_has_masked_originals_and_deleted_text_gone(app_for: AppFor) -> None:
    client = await app_for(contact_info="mask")
    alice, bob, cid = await _pair(client)
    masked = await send(client, alice, cid, "mail me: jane@example.com")
    gone = await send(client, bob, cid, "regrettable")
    assert (await client.delete(f"/api/v1/messages/{gone['id']}", headers=bob.auth)).status == 200
    report = await client.post(f"/api/v1/messages/{masked['id']}/report", json={"reason": "off-platform"}, headers=bob.auth)
    assert report.status == 201

    export = await _export(client, cid)
    assert export["conversation"]["id"] == cid  # type: ignore[index]
    messages = {m["id"]: m for m in export["messages"]}  # type: ignore[attr-defined]
    assert messages[masked["id"]]["content"] == f"mail me: {MASK}"
    assert messages[masked["id"]]["original_content"] == "mail me: jane@example.com"
    assert messages[gone["id"]]["content"] == DELETED_CONTENT and messages[gone["id"]]["original_content"] is None
    assert [r["reason"] for r in export["reports"]] == ["off-platform"]  # type: ignore[attr-defined]
    assert (await client.get(f"/api/v1/admin/conversations/{cid}/export", headers=alice.auth)).status == 403
    assert (await client.get("/api/v1/admin/conversations/01ARZ3NDEKTSV4RRFFQ69G5FAV/export", headers=ADMIN)).status == 404


async def test_with_retention_deleted_text_stays_hidden_from_members_is_exported_and_purged(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = await app_for(retain_deleted_days=7, contact_info="mask")
    alice, bob, cid = await _pair(client)
    deleted = await send(client, bob, cid, "regrettable")
    masked = await send(client, alice, cid, "call 415 555 2671")
    removed = await send(client, alice, cid, "spam")
    assert (await client.delete(f"/api/v1/messages/{deleted['id']}", headers=bob.auth)).status == 200
    assert (await client.delete(f"/api/v1/messages/{masked['id']}", headers=alice.auth)).status == 200
    assert (await client.post(f"/api/v1/admin/messages/{removed['id']}/remove", headers=ADMIN)).status == 200

    for person in (alice, bob):
        history = await (await client.get(f"/api/v1/conversations/{cid}/messages", headers=person.auth)).json()
        assert [(m["content"], m["flags"]) for m in history["items"]] == [
            (DELETED_CONTENT, []), (DELETED_CONTENT, []), (REMOVED_CONTENT, [])
        ]
        assert "regrettable" not in str(history) and "2671" not in str(history)
    exported = {m["id"]: m["original_content"] for m in (await _export(client, cid))["messages"]}  # type: ignore[attr-defined]
    assert exported == {deleted["id"]: "regrettable", masked["id"]: "call 415 555 2671", removed["id"]: "spam"}

    retaining = settings.model_copy(update={"retain_deleted_days": 7})
    with sessions() as session:
        assert purge_retained(session, retaining, utcnow() + timedelta(days=6)) == 0
    with sessions() as session:
        assert purge_retained(session, retaining, utcnow() + timedelta(days=7, minutes=1)) == 3
    exported = {m["id"]: m["original_content"] for m in (await _export(client, cid))["messages"]}  # type: ignore[attr-defined]
    assert set(exported.values()) == {None}


def test_beat_runs_the_purge(settings: Settings) -> None:
    app = create_celery_app(settings)
    assert PURGE_DELETED_TASK in app.tasks
    assert any(entry["task"] == PURGE_DELETED_TASK for entry in app.conf.beat_schedule.values())
