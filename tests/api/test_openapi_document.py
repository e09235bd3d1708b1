"""The OpenAPI document states what the routes do: every status they answer and every constraint
they enforce. (tests/api/test_openapi_conformance.py checks the whole document with schemathesis;
these name the individual promises.)"""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.conftest import ADMIN, MakePerson, start_conversation
from tests.api.uploads import UPLOADS


async def _document(client: TestClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    return await response.json()


def _responses(document: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(status) for status in document["paths"][path][method]["responses"]}


async def test_every_route_lists_the_statuses_its_auth_path_and_body_lead_to(client: TestClient) -> None:
    document = await _document(client)
    # A user's route called with the admin token: 403 user_token_required.
    assert {401, 403} <= _responses(document, "get", "/api/v1/me")
    assert {401, 403, 404} <= _responses(document, "get", "/api/v1/attachments/{attachment_id}")
    assert {400, 401, 403, 404, 409, 413, 422} <= _responses(
        document, "post", "/api/v1/conversations/{conversation_id}/messages"
    )
    assert {400, 401, 403, 413, 415, 422} <= _responses(document, "post", "/api/v1/attachments")
    assert {401, 403, 409, 413, 422} <= _responses(document, "post", "/api/v1/users")


async def test_the_document_states_the_constraints(client: TestClient) -> None:
    document = await _document(client)
    schemas = document["components"]["schemas"]
    url = schemas["CreateWebhookBody"]["properties"]["url"]
    assert re.search(url["pattern"], "https://crm.example.com/parley") and not re.search(url["pattern"], "ftp://x")
    items = schemas["CreateWebhookBody"]["properties"]["event_types"]["items"]
    assert {"message.created", "attachment.ready", "attachment.failed", "*"} <= set(items["enum"])
    assert schemas["CreateConversationBody"]["oneOf"] == [{"required": ["user_id"]}, {"required": ["username"]}]
    content = schemas["SendMessageBody"]["properties"]["content"]["pattern"]
    assert re.search(content, " hi ") and not re.search(content, " \n\t") and not re.search(content, "x" * 10_001)
    (cursor,) = [p for p in document["paths"]["/api/v1/conversations"]["get"]["parameters"] if p["name"] == "cursor"]
    assert not re.search(cursor["schema"]["pattern"], "not-a-cursor")
    mark_read = document["paths"]["/api/v1/conversations/{conversation_id}/read"]["post"]
    assert mark_read["requestBody"]["required"] is False


async def test_input_the_document_refuses_is_refused(client: TestClient, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    refused = [
        await client.post("/api/v1/conversations", json={"user_id": None, "username": "bob"}, headers=alice.auth),
        await client.patch("/api/v1/me/settings", json={"inbox_notifications": 0}, headers=alice.auth),
        await client.post(f"/api/v1/conversations/{conversation['id']}/messages", headers=alice.auth,
                          json={"content": "x", "attachments": [{"name": "a", "url": "https://a.example", "size": "3"}]}),
        await client.post(f"/api/v1/conversations/{conversation['id']}/messages", headers=alice.auth,
                          json={"content": "x", "attachments": [{"name": "a", "url": "https://a.example", "size": 2**64}]}),
        await client.post("/api/v1/webhooks", json={"url": "https://a.example", "enabled": "yes"}, headers=ADMIN),
    ]
    for response in refused:
        assert response.status == 422, await response.text()
        assert (await response.json())["error"]["code"] == "validation_error"


async def test_a_replay_takes_an_rfc3339_time_only(client: TestClient) -> None:
    response = await client.post("/api/v1/webhooks/01ARZ3NDEKTSV4RRFFQ69G5FAV/replay", params={"since": "0.5"},
                                 headers=ADMIN)
    assert response.status == 422
    assert (await response.json())["error"]["details"]["fields"][0]["field"] == "since"


async def test_an_upload_form_takes_the_file_and_nothing_else(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nextra\r\n--{boundary}--\r\n'
    ).encode()
    response = await client.post(
        UPLOADS, data=body, headers={**alice.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "validation_error" and error["details"]["fields"][0]["field"] == "note"
