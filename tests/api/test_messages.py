from __future__ import annotations

import asyncio

from sqlalchemy import select

from parley.models import Event
from tests.api.conftest import MakePerson, send, start_conversation


async def _pair(client, make_person: MakePerson):
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    return alice, bob, conversation["id"]


async def test_a_message_keeps_its_text_exactly_and_has_the_documented_shape(client, make_person: MakePerson) -> None:
    alice, bob, cid = await _pair(client, make_person)
    text = "  Héllo 👋🏽 — 你好, مرحبا\n\tnew line  "

    sent = await send(client, alice, cid, text, attachments=[
        {"name": "brief.pdf", "url": "https://files.example.com/u/brief.pdf"},
        {"name": "mock.png", "url": "https://files.example.com/u/mock.png"},
        {"name": "demo.mp4", "url": "https://files.example.com/u/demo.mp4", "size": 1024},
        {"name": "design.fig", "url": "https://files.example.com/u/design.fig"},
    ])

    assert set(sent) == {"id", "conversation_id", "sender_id", "sender", "content", "attachments", "created_at",
                         "updated_at", "read_at", "deleted_at", "client_id", "source", "flags"}
    assert sent["content"] == text
    assert sent["sender"] == {"id": alice.id, "username": "alice", "name": "Alice", "avatar_url": None}
    assert sent["source"] == "api" and sent["read_at"] is None and sent["deleted_at"] is None
    assert [(a["name"], a["kind"], a["content_type"]) for a in sent["attachments"]] == [
        ("brief.pdf", "document", "application/pdf"),
        ("mock.png", "image", "image/png"),
        ("demo.mp4", "video", "video/mp4"),
        ("design.fig", "document", "application/octet-stream"),
    ]
    assert sent["attachments"][2]["size"] == 1024
    history = await (await client.get(f"/api/v1/conversations/{cid}/messages", headers=bob.auth)).json()
    assert history["items"] == [sent]


async def test_content_must_have_text_and_fit_the_limit(client, make_person: MakePerson, settings) -> None:
    alice, _, cid = await _pair(client, make_person)
    url = f"/api/v1/conversations/{cid}/messages"

    cases = {
        "empty": {"content": ""},
        "blank": {"content": " \n\t "},
        "too long": {"content": "x" * (settings.max_message_chars + 1)},
        "missing": {},
        "eleven attachments": {"content": "hi", "attachments": [{"name": f"{i}.pdf", "url": "https://e.com/f"} for i in range(11)]},
        "bad attachment url": {"content": "hi", "attachments": [{"name": "x", "url": "javascript:alert(1)"}]},
        "NUL byte": {"content": "a\u0000b"},
    }
    for name, body in cases.items():
        response = await client.post(url, json=body, headers=alice.auth)
        assert response.status == 422, name
        assert (await response.json())["error"]["code"] == "validation_error", name

    at_limit = await client.post(url, json={"content": "y" * settings.max_message_chars}, headers=alice.auth)
    assert at_limit.status == 201
    history = await (await client.get(url, headers=alice.auth)).json()
    assert len(history["items"]) == 1


async def test_repeating_a_send_with_its_client_id_returns_the_original(client, make_person: MakePerson) -> None:
    alice, bob, cid = await _pair(client, make_person)
    url = f"/api/v1/conversations/{cid}/messages"
    body = {"content": "only once", "client_id": "draft-42"}

    first = await client.post(url, json=body, headers=alice.auth)
    again = await client.post(url, json=body, headers=alice.auth)
    different = await client.post(url, json={**body, "content": "something else"}, headers=alice.auth)

    assert (first.status, again.status, different.status) == (201, 200, 409)
    assert await first.json() == await again.json()
    assert (await different.json())["error"]["code"] == "client_id_reused"
    history = await (await client.get(url, headers=bob.auth)).json()
    assert [m["content"] for m in history["items"]] == ["only once"]


async def test_concurrent_sends_all_succeed(client, make_person: MakePerson) -> None:
    """On SQLite too: writers queue for the lock instead of failing with 'database is locked'."""
    alice, bob, cid = await _pair(client, make_person)
    url = f"/api/v1/conversations/{cid}/messages"

    responses = await asyncio.gather(
        *(client.post(url, json={"content": f"m{i}"}, headers=(alice if i % 2 else bob).auth) for i in range(30))
    )

    assert [r.status for r in responses] == [201] * 30
    history = await (await client.get(url, params={"limit": "200"}, headers=alice.auth)).json()
    assert sorted(m["content"] for m in history["items"]) == sorted(f"m{i}" for i in range(30))


async def test_history_shows_the_last_50_oldest_first_and_pages_both_ways(client, make_person: MakePerson) -> None:
    alice, bob, cid = await _pair(client, make_person)
    url = f"/api/v1/conversations/{cid}/messages"
    sent = [(await send(client, alice if i % 2 else bob, cid, f"message {i}"))["id"] for i in range(120)]

    latest = await (await client.get(url, headers=alice.auth)).json()
    older = await (await client.get(url, params={"before": latest["items"][0]["id"]}, headers=alice.auth)).json()
    oldest = await (await client.get(url, params={"before": older["items"][0]["id"]}, headers=alice.auth)).json()
    forward = await (await client.get(url, params={"after": sent[9], "limit": "5"}, headers=alice.auth)).json()
    tail = await (await client.get(url, params={"after": sent[115]}, headers=alice.auth)).json()

    assert [m["id"] for m in latest["items"]] == sent[70:] and latest["has_more"] is True
    assert [m["id"] for m in older["items"]] == sent[20:70] and older["has_more"] is True
    assert [m["id"] for m in oldest["items"]] == sent[:20] and oldest["has_more"] is False
    assert [m["id"] for m in forward["items"]] == sent[10:15] and forward["has_more"] is True
    assert [m["id"] for m in tail["items"]] == sent[116:] and tail["has_more"] is False


async def test_a_history_page_is_stable_while_new_messages_arrive(client, make_person: MakePerson) -> None:
    alice, bob, cid = await _pair(client, make_person)
    url = f"/api/v1/conversations/{cid}/messages"
    sent = [(await send(client, alice, cid, f"m{i}"))["id"] for i in range(10)]
    first_page = await (await client.get(url, params={"limit": "4"}, headers=bob.auth)).json()

    for i in range(5):
        await send(client, bob, cid, f"new {i}")
    next_page = await (await client.get(url, params={"limit": "4", "before": first_page["items"][0]["id"]},
                                        headers=bob.auth)).json()

    assert [m["id"] for m in first_page["items"]] == sent[6:]
    assert [m["id"] for m in next_page["items"]] == sent[2:6]


async def test_history_rejects_bad_paging_parameters(client, make_person: MakePerson) -> None:
    alice, _, cid = await _pair(client, make_person)
    url = f"/api/v1/conversations/{cid}/messages"
    for params in ({"limit": "0"}, {"limit": "201"}, {"limit": "many"}, {"before": "nope"}, {"sort": "desc"}):
        response = await client.get(url, params=params, headers=alice.auth)
        assert response.status == 422, params
        assert (await response.json())["error"]["code"] == "validation_error", params
    assert (await client.get(url, params={"limit": "200"}, headers=alice.auth)).status == 200


async def test_history_between_two_messages_pages_forward_from_after_up_to_before(
    client, make_person: MakePerson
) -> None:
    alice, bob, cid = await _pair(client, make_person)
    sent = [(await send(client, alice, cid, f"m{n}"))["id"] for n in range(6)]
    url = f"/api/v1/conversations/{cid}/messages"

    page = await (await client.get(url, params={"after": sent[0], "before": sent[5], "limit": "3"},
                                   headers=bob.auth)).json()
    rest = await (await client.get(url, params={"after": sent[3], "before": sent[5]}, headers=bob.auth)).json()

    assert [m["id"] for m in page["items"]] == sent[1:4] and page["has_more"] is True
    assert [m["id"] for m in rest["items"]] == sent[4:5] and rest["has_more"] is False


async def test_reading_a_conversation_marks_the_other_members_messages_read(client, make_person: MakePerson) -> None:
    alice, bob, cid = await _pair(client, make_person)
    mine = await send(client, bob, cid, "bob's own message")
    first = await send(client, alice, cid, "one")
    second = await send(client, alice, cid, "two")
    third = await send(client, alice, cid, "three")

    partial = await client.post(f"/api/v1/conversations/{cid}/read", json={"message_id": second["id"]}, headers=bob.auth)
    receipt = await partial.json()
    inbox = await (await client.get("/api/v1/conversations", headers=bob.auth)).json()
    seen_by_alice = await (await client.get(f"/api/v1/conversations/{cid}/messages", headers=alice.auth)).json()

    assert partial.status == 200
    assert receipt["count"] == 2 and receipt["unread_count"] == 1 and receipt["up_to_message_id"] == second["id"]
    assert inbox["items"][0]["unread_count"] == 1
    read_at = {m["id"]: m["read_at"] for m in seen_by_alice["items"]}
    assert read_at[first["id"]] == read_at[second["id"]] == receipt["read_at"]
    assert read_at[third["id"]] is None and read_at[mine["id"]] is None

    everything = await (await client.post(f"/api/v1/conversations/{cid}/read", headers=bob.auth)).json()
    again = await (await client.post(f"/api/v1/conversations/{cid}/read", headers=bob.auth)).json()
    assert (everything["count"], everything["unread_count"]) == (1, 0)
    assert (again["count"], again["unread_count"]) == (0, 0)


async def test_reading_up_to_a_message_of_another_conversation_is_refused(client, make_person: MakePerson) -> None:
    alice, bob, cid = await _pair(client, make_person)
    carol = await make_person("carol")
    other = await start_conversation(client, alice, carol)
    foreign = await send(client, alice, other["id"], "elsewhere")
    response = await client.post(f"/api/v1/conversations/{cid}/read", json={"message_id": foreign["id"]}, headers=bob.auth)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "validation_error"


async def test_the_sender_deletes_a_message_for_both_for_good(client, make_person: MakePerson, sessions) -> None:
    alice, bob, cid = await _pair(client, make_person)
    message = await send(client, alice, cid, "oops", attachments=[{"name": "secret.pdf", "url": "https://e.com/s.pdf"}])

    by_bob = await client.delete(f"/api/v1/messages/{message['id']}", headers=bob.auth)
    deleted = await client.delete(f"/api/v1/messages/{message['id']}", headers=alice.auth)
    again = await client.delete(f"/api/v1/messages/{message['id']}", headers=alice.auth)

    assert by_bob.status == 403 and (await by_bob.json())["error"]["code"] == "not_sender"
    assert deleted.status == 200 and again.status == 200
    shown = await deleted.json()
    assert shown["content"] == "This message was deleted"
    assert shown["attachments"] == [] and shown["deleted_at"] is not None
    assert await again.json() == shown
    for person in (alice, bob):
        history = await (await client.get(f"/api/v1/conversations/{cid}/messages", headers=person.auth)).json()
        assert history["items"] == [shown]
    with sessions() as session:
        types = (session.execute(select(Event.type).order_by(Event.id))).scalars().all()
    assert types == ["conversation.created", "message.created", "message.deleted"]


async def test_deleting_an_unknown_message_is_not_found(client, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    for message_id in ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "garbage"):
        response = await client.delete(f"/api/v1/messages/{message_id}", headers=alice.auth)
        assert response.status == 404


async def test_every_change_writes_its_event(client, make_person: MakePerson, sessions) -> None:
    alice, bob, cid = await _pair(client, make_person)
    message = await send(client, alice, cid, "hi")
    await client.post(f"/api/v1/conversations/{cid}/read", headers=bob.auth)
    await client.delete(f"/api/v1/messages/{message['id']}", headers=alice.auth)

    with sessions() as session:
        events = (session.execute(select(Event).order_by(Event.id))).scalars().all()

    assert [e.type for e in events] == ["conversation.created", "message.created", "message.read", "message.deleted"]
    assert all(e.conversation_id == cid and e.dispatched_at is None for e in events)
    assert events[2].payload["reader_id"] == bob.id and events[2].payload["count"] == 1
