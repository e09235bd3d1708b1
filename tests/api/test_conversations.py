from __future__ import annotations

from tests.api.conftest import MakePerson, send, start_conversation


async def test_starting_a_conversation_twice_returns_the_same_one_to_both(client, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")

    first = await client.post("/api/v1/conversations", json={"user_id": bob.id}, headers=alice.auth)
    again = await client.post("/api/v1/conversations", json={"user_id": bob.id}, headers=alice.auth)
    reverse = await client.post("/api/v1/conversations", json={"username": "ALICE"}, headers=bob.auth)

    assert (first.status, again.status, reverse.status) == (201, 200, 200)
    created = await first.json()
    assert (await again.json())["id"] == (await reverse.json())["id"] == created["id"]
    assert created["initiator_id"] == alice.id and created["recipient_id"] == bob.id
    assert created["other_user"] == {"id": bob.id, "username": "bob", "name": "Bob", "avatar_url": None}
    assert created["last_message"] is None and created["unread_count"] == 0
    assert (await reverse.json())["other_user"]["id"] == alice.id


async def test_the_first_message_creates_the_conversation(client, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")

    response = await client.post(
        "/api/v1/conversations", json={"username": "bob", "message": {"content": "Hello! I saw your gig."}},
        headers=alice.auth,
    )

    assert response.status == 201
    conversation = await response.json()
    assert conversation["last_message"]["content"] == "Hello! I saw your gig."
    inbox = await (await client.get("/api/v1/conversations", headers=bob.auth)).json()
    assert [c["id"] for c in inbox["items"]] == [conversation["id"]]
    assert inbox["items"][0]["unread_count"] == 1


async def test_messaging_yourself_or_nobody_is_a_clear_error(client, make_person: MakePerson) -> None:
    alice = await make_person("alice")

    self_talk = await client.post("/api/v1/conversations", json={"user_id": alice.id}, headers=alice.auth)
    ghost = await client.post("/api/v1/conversations", json={"username": "ghost"}, headers=alice.auth)
    both = await client.post("/api/v1/conversations", json={"username": "a", "user_id": "b"}, headers=alice.auth)

    assert self_talk.status == 422 and (await self_talk.json())["error"]["code"] == "cannot_message_self"
    assert ghost.status == 404 and (await ghost.json())["error"]["code"] == "user_not_found"
    assert both.status == 422 and (await both.json())["error"]["code"] == "validation_error"


async def test_a_conversation_you_are_not_in_does_not_exist_for_you(client, make_person: MakePerson) -> None:
    alice, bob, eve = await make_person("alice"), await make_person("bob"), await make_person("eve")
    conversation = await start_conversation(client, alice, bob)
    message = await send(client, alice, conversation["id"], "private")
    cid = conversation["id"]

    attempts = [
        await client.get(f"/api/v1/conversations/{cid}", headers=eve.auth),
        await client.get(f"/api/v1/conversations/{cid}/messages", headers=eve.auth),
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=eve.auth),
        await client.post(f"/api/v1/conversations/{cid}/read", headers=eve.auth),
        await client.delete(f"/api/v1/messages/{message['id']}", headers=eve.auth),
    ]

    for response in attempts:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_finding_the_conversation_with_a_user(client, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")

    before = await client.get(f"/api/v1/conversations/with/{bob.id}", headers=alice.auth)
    conversation = await start_conversation(client, alice, bob)
    after = await client.get(f"/api/v1/conversations/with/{alice.id}", headers=bob.auth)

    assert before.status == 404 and (await before.json())["error"]["code"] == "not_found"
    assert after.status == 200 and (await after.json())["id"] == conversation["id"]


async def test_the_inbox_lists_most_recent_activity_first_with_previews_and_unread_counts(
    client, make_person: MakePerson
) -> None:
    me = await make_person("me", avatar_url="https://cdn.example.com/me.png")
    others = [await make_person(name) for name in ("ann", "ben", "cat")]
    conversations = {p.username: await start_conversation(client, p, me) for p in others}
    await send(client, others[0], conversations["ann"]["id"], "from ann 1")
    await send(client, others[2], conversations["cat"]["id"], "from cat")
    await send(client, others[0], conversations["ann"]["id"], "from ann 2")

    inbox = await client.get("/api/v1/conversations", headers=me.auth)

    assert inbox.status == 200
    items = (await inbox.json())["items"]
    assert [i["other_user"]["username"] for i in items] == ["ann", "cat", "ben"]
    assert [i["last_message"]["content"] if i["last_message"] else None for i in items] == ["from ann 2", "from cat", None]
    assert [i["unread_count"] for i in items] == [2, 1, 0]
    assert items[0]["updated_at"] == items[0]["last_message"]["created_at"]
    assert set(items[0]["other_user"]) == {"id", "username", "name", "avatar_url"}


async def test_the_inbox_pages_with_a_cursor_without_repeats_or_gaps(client, make_person: MakePerson) -> None:
    me = await make_person("me")
    started = []
    for i in range(7):
        other = await make_person(f"user{i}")
        conversation = await start_conversation(client, me, other)
        await send(client, me, conversation["id"], f"hello {i}")
        started.append(conversation["id"])

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/v1/conversations", params=params, headers=me.auth)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(started))


async def test_a_forged_inbox_cursor_is_refused(client, make_person: MakePerson) -> None:
    me = await make_person("me")
    response = await client.get("/api/v1/conversations", params={"cursor": "not-a-cursor"}, headers=me.auth)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_cursor"
