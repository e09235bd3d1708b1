"""Bad input gets a clear error with a stable code, never a 500."""

from __future__ import annotations

import pytest

from parley.api.app import all_endpoints
from tests.api.conftest import ADMIN, MakePerson, start_conversation

NASTY_BODIES: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"text"',
    b"12",
    b'{"content": {"nested": true}}',
    b'{"content": "\\ud800"}',
    b'{"content": "a\\u0000"}',
    b'{"user_id": 123456789012345678901234567890}',
    b'{"username": "\\u0000"}',
    b'{"message_id": "\\ud83d"}',
    b'{"attachments": "nope", "content": "x"}',
    b'{"email_digest": null, "inbox_notifications": "yes"}',
    b"[" * 5000 + b"]" * 5000,
    "{\"content\": \"\xff\"}".encode("latin-1"),
]
NASTY_PATH_VALUES = ["x", "%00", "%F0%9F%98%80", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "a" * 300, "..%2F..%2Fetc"]


def _error(body: dict) -> tuple[str, str]:
    return body["error"]["code"], body["error"]["message"]


async def test_malformed_json_is_a_400(client, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    for raw in (b"{", b"not json", b"[1, 2]"):
        response = await client.post("/api/v1/conversations", data=raw, headers=alice.auth)
        assert response.status == 400
        body = await response.json()
        assert body["error"]["code"] == "invalid_json"
        assert set(body["error"]) == {"code", "message", "details"}


async def test_schema_violations_are_a_422_naming_the_fields(client, make_person: MakePerson) -> None:
    response = await client.post("/api/v1/users", json={"username": "bad name!", "name": "", "surprise": 1},
                                 headers=ADMIN)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "validation_error"
    assert {f["field"] for f in error["details"]["fields"]} == {"username", "name", "surprise"}


async def test_unknown_routes_and_methods_answer_in_json(client) -> None:
    missing = await client.get("/api/v1/nothing-here")
    wrong_method = await client.put("/api/v1/conversations")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"
    assert wrong_method.status == 405 and (await wrong_method.json())["error"]["code"] == "method_not_allowed"


async def test_an_oversized_body_is_a_413(client, make_person: MakePerson, settings) -> None:
    alice = await make_person("alice")
    response = await client.post("/api/v1/conversations", data=b"x" * (settings.max_request_bytes + 1),
                                 headers=alice.auth)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_no_input_produces_a_500(client, make_person: MakePerson) -> None:
    """Every route, hit with hostile bodies and path values, as a user and as the admin."""
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    created = await client.post("/api/v1/webhooks", json={"url": "https://8.8.8.8/hook"}, headers=alice.auth)
    webhook = await created.json()
    failures = []
    for endpoint in all_endpoints():
        paths = {endpoint.path.replace("{conversation_id}", conversation["id"]).replace("{user_id}", bob.id)
                 .replace("{message_id}", "x").replace("{token_id}", "x").replace("{username}", "bob")
                 .replace("{attachment_id}", "x").replace("{webhook_id}", webhook["id"]).replace("{delivery_id}", "x")}
        for value in NASTY_PATH_VALUES:
            paths.add(endpoint.path.replace("{conversation_id}", value).replace("{user_id}", value)
                      .replace("{message_id}", value).replace("{token_id}", value).replace("{username}", value)
                      .replace("{attachment_id}", value).replace("{webhook_id}", value).replace("{delivery_id}", value))
        for path in sorted(paths):
            for headers in (alice.auth, ADMIN):
                bodies = NASTY_BODIES if endpoint.body is not None else [b""]
                for raw in bodies:
                    response = await client.request(endpoint.method, path, data=raw, headers=headers)
                    if response.status >= 500:
                        failures.append((endpoint.method, path, raw[:40], response.status))
        if endpoint.query is not None:
            for params in ({"size": "-1"}, {"size": "x"}, {"limit": "-1"}, {"limit": "1e9"}, {"cursor": "%%%"}, {"before": "\u0000"},
                           {"after": "z" * 500}, {"cursor": "MjAyNi0xMS0yMVQxMjowMDowMHxub3Bl"},
                           {"since": "2026-13-45T99:00:00"}, {"since": "\u0000"}, {"since": "1" * 400}):
                path = endpoint.path.replace("{conversation_id}", conversation["id"]).replace("{webhook_id}", webhook["id"])
                response = await client.request(endpoint.method, path, params=params, headers=alice.auth)
                if response.status >= 500:
                    failures.append((endpoint.method, path, params, response.status))
    assert failures == []
