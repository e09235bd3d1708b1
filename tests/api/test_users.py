from __future__ import annotations

import pytest
from sqlalchemy import select

from parley.models import ApiToken
from tests.api.conftest import ADMIN, MakePerson


async def test_admin_provisions_a_user_and_mints_a_token(client, make_person: MakePerson) -> None:
    alice = await make_person("alice", email="alice@example.com", avatar_url="https://cdn.example.com/a.png")

    me = await client.get("/api/v1/me", headers=alice.auth)

    assert me.status == 200
    body = await me.json()
    assert body["id"] == alice.id
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["kind"] == "user"
    assert body["created_at"].endswith("Z")


async def test_usernames_are_unique_whatever_their_case(client, make_person: MakePerson) -> None:
    await make_person("Alice")
    again = await client.post("/api/v1/users", json={"username": "aLiCe", "name": "Other"}, headers=ADMIN)
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "username_taken"


async def test_only_the_admin_provisions_users(client, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    body = {"username": "mallory", "name": "M"}

    anonymous = await client.post("/api/v1/users", json=body)
    as_user = await client.post("/api/v1/users", json=body, headers=alice.auth)
    mint = await client.post(f"/api/v1/users/{alice.id}/tokens", headers=alice.auth)

    assert anonymous.status == 401 and (await anonymous.json())["error"]["code"] == "unauthorized"
    assert as_user.status == 403 and (await as_user.json())["error"]["code"] == "admin_required"
    assert mint.status == 403


async def test_a_bad_token_is_refused(client) -> None:
    for headers in ({"Authorization": "Bearer plt_nope"}, {"Authorization": "Basic abc"}, {}):
        response = await client.get("/api/v1/me", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"


async def test_other_users_see_a_public_profile_without_contact_details(client, make_person: MakePerson) -> None:
    alice = await make_person("alice", email="alice@example.com")
    bob = await make_person("bob")

    by_id = await client.get(f"/api/v1/users/{alice.id}", headers=bob.auth)
    by_name = await client.get("/api/v1/users/by-username/ALICE", headers=bob.auth)

    assert by_id.status == by_name.status == 200
    profile = await by_id.json()
    assert profile == await by_name.json()
    assert profile["username"] == "alice" and "email" not in profile


async def test_unknown_users_are_not_found(client, make_person: MakePerson) -> None:
    bob = await make_person("bob")
    for path in ("/api/v1/users/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/api/v1/users/by-username/ghost",
                 "/api/v1/users/by-username/%00", "/api/v1/users/not-an-id"):
        response = await client.get(path, headers=bob.auth)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"


async def test_tokens_are_stored_hashed_and_revocable(client, make_person: MakePerson, sessions) -> None:
    alice = await make_person("alice")
    with sessions() as session:
        stored = (session.execute(select(ApiToken.token_hash))).scalars().all()
    assert alice.token not in stored and all(len(h) == 64 for h in stored)

    revoked = await client.delete(f"/api/v1/tokens/{alice.token_id}", headers=alice.auth)
    after = await client.get("/api/v1/me", headers=alice.auth)

    assert revoked.status == 204
    assert after.status == 401


async def test_a_user_cannot_revoke_someone_elses_token(client, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    attempt = await client.delete(f"/api/v1/tokens/{alice.token_id}", headers=bob.auth)
    assert attempt.status == 404
    assert (await client.get("/api/v1/me", headers=alice.auth)).status == 200
    by_admin = await client.delete(f"/api/v1/tokens/{alice.token_id}", headers=ADMIN)
    assert by_admin.status == 204
    assert (await client.get("/api/v1/me", headers=alice.auth)).status == 401


async def test_notification_settings_default_and_update(client, make_person: MakePerson) -> None:
    alice = await make_person("alice")

    defaults = await (await client.get("/api/v1/me/settings", headers=alice.auth)).json()
    changed = await client.patch("/api/v1/me/settings", json={"inbox_notifications": False, "email_digest": "weekly"},
                                 headers=alice.auth)
    reread = await (await client.get("/api/v1/me/settings", headers=alice.auth)).json()

    digest_defaults = {"timezone": "UTC", "digest_hour": 8, "digest_weekday": "monday"}
    assert defaults == {"inbox_notifications": True, "order_updates_notifications": True, "email_digest": "daily",
                        **digest_defaults}
    assert changed.status == 200
    assert reread == {"inbox_notifications": False, "order_updates_notifications": True, "email_digest": "weekly",
                      **digest_defaults}


async def test_digest_time_settings(client, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    changed = await client.patch("/api/v1/me/settings", headers=alice.auth, json={
        "timezone": "Asia/Tokyo", "digest_hour": 7, "digest_weekday": "friday"})
    assert changed.status == 200
    body = await changed.json()
    assert (body["timezone"], body["digest_hour"], body["digest_weekday"]) == ("Asia/Tokyo", 7, "friday")
    reread = await (await client.get("/api/v1/me/settings", headers=alice.auth)).json()
    assert reread["timezone"] == "Asia/Tokyo" and reread["digest_hour"] == 7


@pytest.mark.parametrize("field, value", [("timezone", "Mars/Olympus_Mons"), ("timezone", "../../etc/passwd"),
                                          ("digest_hour", 24), ("digest_hour", True), ("digest_weekday", "someday")])
async def test_bad_digest_settings_name_their_field(client, make_person: MakePerson, field: str, value: object) -> None:
    alice = await make_person("alice")
    bad = await client.patch("/api/v1/me/settings", json={field: value}, headers=alice.auth)
    assert bad.status == 422
    assert [f["field"] for f in (await bad.json())["error"]["details"]["fields"]] == [field]


async def test_bad_settings_are_refused_and_nothing_changes(client, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    bad = await client.patch("/api/v1/me/settings", json={"email_digest": "hourly", "inbox_notifications": False},
                             headers=alice.auth)
    assert bad.status == 422
    error = (await bad.json())["error"]
    assert error["code"] == "validation_error"
    assert [f["field"] for f in error["details"]["fields"]] == ["email_digest"]
    settings = await (await client.get("/api/v1/me/settings", headers=alice.auth)).json()
    assert settings["inbox_notifications"] is True
