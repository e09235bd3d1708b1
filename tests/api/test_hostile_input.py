"""Hostile input, class by class: extreme integers and dates, NUL, CR/LF, lone surrogates and
over-long strings, in paths, query strings, bodies, headers and WebSocket frames. Each gets a 4xx
with a stable code (or the documented error frame), never a 500 or a dropped connection, and the
server goes on serving. Tokens never reach a log line on the way."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from yarl import URL

from parley.api.app import all_endpoints, init_app
from parley.api.endpoints import Endpoint
from parley.api.schemas import MAX_STORED_INT
from parley.config import Settings
from parley.models import Attachment
from tests.api.conftest import ADMIN, MakePerson, Person, provision, send, start_conversation
from tests.api.uploads import UPLOADS, process_uploads, upload
from tests.realtime.conftest import connect, next_frame
from tests.workers.conftest import RedisServer

# The classes of the issue, as JSON values (bodies, frames) ...
EXTREME_INTEGERS: list[Any] = [2**63, 2**63 - 1 + 2**53, 2**64, -(2**63) - 1, 10**30, 1e308]
EXTREME_DATES = ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"]
HOSTILE_STRINGS = ["\x00", "01ARZ3NDEKTSV4RRFFQ69G5FA\x00", "\ud800", "a\udfffb", "\r\n", "x\r\nX-Evil: 1", "z" * 20_000]
# ... and as raw bytes in a URL (percent-encoded: lone surrogates as their WTF-8 bytes).
HOSTILE_URL_VALUES = ["%00", "01ARZ3NDEKTSV4RRFFQ69G5FA%00", "%ED%A0%80", "%ED%BF%BF", "%0D%0A", "%FF%FE",
                      "a" * 3000, str(2**64), "0001-01-01T00:00:00%2B23:59"]


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await response.json()
    assert set(body["error"]) == {"code", "message", "details"}, body
    return response.status, body["error"]["code"]


async def assert_still_serving(client: TestClient, person: Person) -> None:
    me = await client.get("/api/v1/me", headers=person.auth)
    assert me.status == 200 and (await me.json())["id"] == person.id
    assert (await client.get("/healthz")).status == 200


def cursor_of(microseconds: str, conversation_id: str) -> str:
    """An inbox cursor as the server gives them out: microseconds since 1970, a dot, an id."""
    return f"{microseconds}.{conversation_id}"


# Out of any range the server hands out: negative, beyond year 9999, a number longer than a cursor.
EXTREME_CURSOR_TIMES = ("-1", "99999999999999999", "1" * 40, "1e308", "0x10")


# --- extreme integers ----------------------------------------------------------------------------


async def test_integers_past_what_can_be_stored_are_a_422_naming_the_field(
    client: TestClient, make_person: MakePerson
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    messages = f"/api/v1/conversations/{conversation['id']}/messages"
    for size in [*EXTREME_INTEGERS, MAX_STORED_INT + 1, -1]:
        attachment = {"name": "big.bin", "url": "https://files.example.com/big.bin", "size": size}
        response = await client.post(messages, json={"content": "huge", "attachments": [attachment]}, headers=alice.auth)
        assert await error_of(response) == (422, "validation_error"), size
        fields = [f["field"] for f in (await response.json())["error"]["details"]["fields"]]
        assert fields == ["attachments.0.size"], (size, fields)
    # The largest one allowed is stored and shown back exactly.
    attachment = {"name": "big.bin", "url": "https://files.example.com/big.bin", "size": MAX_STORED_INT}
    sent = await send(client, alice, conversation["id"], "largest", attachments=[attachment])
    assert sent["attachments"][0]["size"] == MAX_STORED_INT

    hook = await (await client.post("/api/v1/webhooks", json={"url": "https://8.8.8.8/hook"}, headers=alice.auth)).json()
    queries = [
        ("/api/v1/conversations", "limit"),
        (messages, "limit"),
        (f"/api/v1/webhooks/{hook['id']}/deliveries", "limit"),
        (f"{UPLOADS}/01ARZ3NDEKTSV4RRFFQ69G5FAV/thumbnail", "size"),
        ("/api/v1/ws", "since"),
    ]
    for path, name in queries:
        for value in EXTREME_INTEGERS:
            response = await client.get(path, params={name: str(value)}, headers=alice.auth)
            assert await error_of(response) == (422, "validation_error"), (path, name, value)
    await assert_still_serving(client, alice)


# --- extreme dates -------------------------------------------------------------------------------


async def test_times_with_extreme_utc_offsets_are_a_422(client: TestClient, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    for stamp in EXTREME_CURSOR_TIMES:
        inbox = await client.get("/api/v1/conversations", params={"cursor": cursor_of(stamp, conversation["id"])},
                                 headers=alice.auth)
        assert (await error_of(inbox))[0] == 422, stamp

    hook = await (await client.post("/api/v1/webhooks", json={"url": "https://8.8.8.8/hook"}, headers=alice.auth)).json()
    for stamp in EXTREME_DATES:
        replay = await client.post(f"/api/v1/webhooks/{hook['id']}/replay", params={"since": stamp}, headers=alice.auth)
        assert await error_of(replay) == (422, "validation_error"), stamp
        assert [f["field"] for f in (await replay.json())["error"]["details"]["fields"]] == ["since"]
    # The same instants, with offsets that keep them in range, are fine.
    fine = await client.post(f"/api/v1/webhooks/{hook['id']}/replay", params={"since": "0001-01-01T23:59:00+23:59"},
                             headers=alice.auth)
    assert fine.status == 202
    page = await client.get("/api/v1/conversations", params={"cursor": cursor_of("9999999999999999", conversation["id"])},
                            headers=alice.auth)
    assert page.status == 200
    await assert_still_serving(client, alice)


# --- id-shaped parameters ------------------------------------------------------------------------


async def test_id_shaped_query_parameters_are_checked_as_ids(client: TestClient, make_person: MakePerson) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    hook = await (await client.post("/api/v1/webhooks", json={"url": "https://8.8.8.8/hook"}, headers=alice.auth)).json()
    checked = [
        (f"/api/v1/webhooks/{hook['id']}/deliveries", "before"),
        (f"/api/v1/conversations/{conversation['id']}/messages", "before"),
        (f"/api/v1/conversations/{conversation['id']}/messages", "after"),
    ]
    for path, name in checked:
        for value in HOSTILE_URL_VALUES:
            response = await client.get(URL(f"{path}?{name}={value}", encoded=True), headers=alice.auth)
            assert await error_of(response) == (422, "validation_error"), (path, name, value)
            fields = [f["field"] for f in (await response.json())["error"]["details"]["fields"]]
            assert fields == [name], (path, value, fields)
    await assert_still_serving(client, alice)


# --- sniffed content types -----------------------------------------------------------------------


def fake_opendocument(declared: bytes) -> bytes:
    """A ZIP whose first, stored entry is `mimetype`, as OpenDocument writes it, declaring anything."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), declared, compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", "<office:document-content/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("declared", "content_type"),
    [
        (b"application/vnd.oasis.opendocument.text\x00evil", "application/zip"),
        (b"application/vnd.oasis.opendocument.text\r\nX-Evil: 1", "application/zip"),
        (b"application/vnd.oasis.opendocument.text\xff", "application/zip"),
        (b"application/vnd.oasis.opendocument.textual", "application/zip"),
        (b"application/vnd.oasis.opendocument.spreadsheet", "application/vnd.oasis.opendocument.spreadsheet"),
    ],
)
async def test_a_sniffed_type_is_one_parley_knows_never_bytes_from_the_file(
    client: TestClient, make_person: MakePerson, settings: Settings, declared: bytes, content_type: str
) -> None:
    alice = await make_person("alice")
    data = fake_opendocument(declared)
    created = await upload(client, alice, "report.odt", data)
    assert created["content_type"] == content_type
    assert process_uploads(settings) == {created["id"]: "ready"}
    served = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth)
    assert served.status == 200 and served.headers["Content-Type"] == content_type
    assert await served.read() == data
    await assert_still_serving(client, alice)


# aiohttp warns about each Content-Disposition it cannot decode: that is what is being sent here.
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionParam")
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
async def test_hostile_upload_names_and_part_headers_are_sanitised_or_refused(
    client: TestClient, make_person: MakePerson
) -> None:
    alice = await make_person("alice")
    data = b"plain text\n"
    names = [
        b'filename="a\x00b.txt"', b"filename*=UTF-8''a%00b.txt", b"filename*=UTF-8''%ED%A0%80.txt",
        b"filename*=UTF-8''a%0D%0AX-Evil%3A%201.txt", b'filename="' + b"n" * 5000 + b'.txt"', b"filename*=UTF-8''%FF%FE.txt",
    ]
    for name in names:
        for part_type in (b"text/plain", b"text/plain\x00evil", b"\xff\xfe/\xed\xa0\x80"):
            boundary = b"hostileboundary"
            body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; " + name
                    + b"\r\nContent-Type: " + part_type + b"\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n")
            response = await client.post(UPLOADS, data=body, headers={
                **alice.auth, "Content-Type": "multipart/form-data; boundary=hostileboundary"})
            if response.status == 201:
                shown = await response.json()
                assert shown["content_type"] == "text/plain"
                assert shown["name"].isprintable() and len(shown["name"]) <= 200, shown["name"]
                shown["name"].encode("utf-8")  # no lone surrogate
            else:
                # A name that cannot be decoded leaves no file part: refused as a form without one.
                assert await error_of(response) in {(400, "invalid_upload"), (422, "validation_error")}, (name, part_type)
    await assert_still_serving(client, alice)


async def test_a_stored_content_type_unfit_for_a_header_is_served_as_octet_stream(
    client: TestClient, make_person: MakePerson, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Rows written before types were sniffed into a known set may hold anything the file said."""
    alice = await make_person("alice")
    data = fake_opendocument(b"application/vnd.oasis.opendocument.text")
    created = await upload(client, alice, "report.odt", data)
    process_uploads(settings)
    for stored in ("application/vnd.oasis.opendocument.text\r\nX-Evil: 1", "application/vnd.oasis.opendocument.text\x00x"):
        if "\x00" in stored and settings.database_url.startswith("postgresql"):
            continue  # PostgreSQL never stored NUL: such an upload was a 500
        with sessions() as session, session.begin():
            session.execute(update(Attachment).where(Attachment.id == created["id"]).values(content_type=stored))
        served = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth)
        assert served.status == 200 and served.headers["Content-Type"] == "application/octet-stream"
        assert "X-Evil" not in served.headers and await served.read() == data
    await assert_still_serving(client, alice)


# --- WebSocket frames ----------------------------------------------------------------------------


async def test_hostile_typing_frames_get_an_error_frame_and_the_connection_lives_on(
    client: TestClient, make_person: MakePerson
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    ws = await connect(client, alice)
    values: list[Any] = [*HOSTILE_STRINGS, "%00", *EXTREME_INTEGERS, -1, 0.5, None, [], {}, True]
    for value in values:
        await ws.send_str(json.dumps({"type": "typing", "conversation_id": value}))
        frame = await next_frame(ws)
        assert (frame["type"], frame["data"]["code"]) == ("error", "invalid_frame"), value
    for text in ['{"type": "\\u0000"}', '{"type": "\\ud800"}', '{"type": "ping\\r\\n"}', '{"type": ' + str(2**64) + "}"]:
        await ws.send_str(text)
        frame = await next_frame(ws)
        assert (frame["type"], frame["data"]["code"]) == ("error", "unknown_type"), text
    await ws.send_json({"type": "ping"})
    assert (await next_frame(ws))["type"] == "pong"

    # Still connected and useful: the other member gets this tab's typing.
    bob_ws = await connect(client, bob)
    await ws.send_json({"type": "typing", "conversation_id": conversation["id"]})
    while (frame := await next_frame(bob_ws))["type"] != "typing":
        pass
    assert frame["data"]["user_id"] == alice.id
    await ws.close()
    await bob_ws.close()


async def test_hostile_websocket_query_parameters_are_refused_before_the_upgrade(
    client: TestClient, make_person: MakePerson
) -> None:
    alice = await make_person("alice")
    for value in HOSTILE_URL_VALUES:
        ticket = await client.get(URL(f"/api/v1/ws?ticket={value}", encoded=True))
        assert (await error_of(ticket))[0] in (401, 422), value
        since = await client.get(URL(f"/api/v1/ws?since={value}", encoded=True), headers=alice.auth)
        assert await error_of(since) == (422, "validation_error"), value
    await assert_still_serving(client, alice)


# --- headers, and what reaches the log -----------------------------------------------------------


async def raw_request(client: TestClient, request: bytes) -> tuple[int, bytes]:
    """Send bytes no HTTP client library would send; the status and the whole answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line = answer.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), answer


def get_with(header: bytes, path: bytes = b"/api/v1/me") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n" + header + b"\r\n\r\n"


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    for name in ("aiohttp", "parley"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


async def test_malformed_headers_are_a_400_and_no_token_reaches_the_log(
    client: TestClient, make_person: MakePerson, logged: pytest.LogCaptureFixture
) -> None:
    alice = await make_person("alice")
    token = alice.token.encode()
    # The parser refuses these before Parley sees them (aiohttp answers 400 itself).
    for header in (
        b"Authorization: Bearer " + token + b"\x01",
        b"Authorization: Bearer " + token + b"\x7f",
        b"Authorization: Bearer " + token + b"\x00",
        b"Authorization: Bearer " + token + b"x" * 9000,  # a header line over aiohttp's limit
        b"X-Padding: " + b"y" * 9000 + b"\r\nAuthorization: Bearer " + token,
    ):
        status, answer = await raw_request(client, get_with(header))
        assert status == 400, header[:60]
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert json.loads(body)["error"]["code"] == "bad_request", body  # a stable code...
        assert token not in answer  # ...and the bytes it refused are not quoted back
    # These reach Parley: a token it does not know, whatever its bytes.
    for header in (
        b"Authorization: Bearer " + token + b"\xff",
        b"Authorization: Bearer \xed\xa0\x80" + token,
        b"Authorization: Bearer " + token + b" \xc3\xa9",
        b"Authorization: Bearer " + b"t" * 8000,
    ):
        status, answer = await raw_request(client, get_with(header))
        assert status == 401 and b'"code": "unauthorized"' in answer.replace(b'":"', b'": "'), answer[-200:]
    await assert_still_serving(client, alice)

    text = logged.text
    assert alice.token not in text and alice.token[4:] not in text
    assert "http.bad_request" in text
    errors = [r for r in logged.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_ticket_in_the_query_string_is_kept_out_of_the_access_log(
    client: TestClient, make_person: MakePerson, logged: pytest.LogCaptureFixture
) -> None:
    alice = await make_person("alice")
    issued = await (await client.post("/api/v1/ws/tickets", headers=alice.auth)).json()
    ws = await client.ws_connect("/api/v1/ws", params={"ticket": issued["ticket"]})
    assert (await next_frame(ws))["type"] == "hello"
    await ws.close()
    used_again = await client.get("/api/v1/ws", params={"ticket": issued["ticket"]})
    assert await error_of(used_again) == (401, "invalid_ticket")
    assert issued["ticket"] not in logged.text and issued["ticket"][4:] not in logged.text


async def test_a_hostile_request_id_is_replaced_not_echoed(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    for value in (b"\xff\xfe", b"\xed\xa0\x80", b"a" * 5000, b"x y", b"<script>"):
        status, answer = await raw_request(client, get_with(b"X-Request-ID: " + value + b"\r\n" + b"Authorization: Bearer " + alice.token.encode()))
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert status == 200, answer[:200]
        echoed = [line for line in head.split(b"\r\n") if line.lower().startswith(b"x-request-id:")]
        assert len(echoed) == 1 and value not in echoed[0] and len(echoed[0]) == len(b"X-Request-ID: ") + 26
    kept = await client.get("/api/v1/me", headers={**alice.auth, "X-Request-ID": "trace-1.2:3"})
    assert kept.headers["X-Request-ID"] == "trace-1.2:3"


async def test_every_route_answers_hostile_headers_with_a_4xx(
    client: TestClient, make_person: MakePerson, settings: Settings, logged: pytest.LogCaptureFixture
) -> None:
    """Each route, over a raw connection: credentials and request ids with bytes that are not
    UTF-8, lone surrogates, control characters and over-long values; conditional and range headers
    with extreme integers and dates. Whatever reaches Parley gets a JSON error with a code; what
    the HTTP parser refuses gets its 400. The token is in no log line."""
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    created = await upload(client, alice, "notes.txt", b"some notes\n")
    process_uploads(settings)
    sent = await send(client, alice, conversation["id"], "hello", attachment_ids=[created["id"]])
    hook = await (await client.post("/api/v1/webhooks", json={"url": "https://8.8.8.8/hook"}, headers=alice.auth)).json()
    ids = {"conversation_id": conversation["id"], "user_id": bob.id, "message_id": sent["id"], "token_id": alice.token_id,
           "username": "bob", "attachment_id": created["id"], "webhook_id": hook["id"],
           "delivery_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}
    token = alice.token.encode()
    reaching_parley = [
        b"Authorization: Bearer " + token + b"\xff",
        b"Authorization: Bearer \xed\xa0\x80",
        b"Authorization: Bearer " + b"t" * 8000,
        b"Authorization: " + token,
        b"Authorization: Bearer " + token + b"\r\nX-Request-ID: \xff\xfe\xed\xa0\x80" + b"r" * 7000,
        b"Authorization: Bearer " + token + b"\r\nRange: bytes=" + str(2**64).encode() + b"-" + str(2**65).encode(),
        b"Authorization: Bearer " + token + b"\r\nRange: bytes=-" + str(2**64).encode(),
        b"Authorization: Bearer " + token + b"\r\nIf-Modified-Since: Mon, 01 Jan 0001 00:00:00 +2359",
        b"Authorization: Bearer " + token + b"\r\nIf-Unmodified-Since: Fri, 31 Dec 9999 23:59:59 -2359",
        b"Authorization: Bearer " + token + b"\r\nIf-Range: Fri, 31 Dec 9999 23:59:59 -2359\r\nRange: bytes=0-1",
        b"Authorization: Bearer " + token + b"\r\nContent-Type: application/json; charset=\xed\xa0\x80",
    ]
    refused_by_the_parser = [
        b"Authorization: Bearer " + token + b"\x00",
        b"Authorization: Bearer " + token + b"\x1b[2J",
        b"X-Request-ID: " + b"r" * 9000 + b"\r\nAuthorization: Bearer " + token,
        b"Content-Length: " + str(2**64).encode() + b"\r\nAuthorization: Bearer " + token,
    ]
    failures = []
    for endpoint in all_endpoints():
        # Deleting the caller's own token or message would spoil the rest: those get an unknown id.
        unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV" if endpoint.method == "DELETE" else None
        path = _fill(endpoint.path, ids, unknown).encode()
        for header in reaching_parley:
            request = endpoint.method.encode() + b" " + path + b" HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n"
            request += header + b"\r\nContent-Length: 0\r\n\r\n"
            status, answer = await raw_request(client, request)
            body = answer.split(b"\r\n\r\n", 1)[1]
            # 416 with Content-Range is HTTP's own answer to a range past the end, from aiohttp's FileResponse.
            unsatisfiable = status == 416 and b"\r\ncontent-range: bytes */" in answer.lower()
            if status >= 500 or (status >= 400 and b'"code"' not in body and not unsatisfiable):
                failures.append((endpoint.method, endpoint.path, header[:70], status, body[:100]))
        for header in refused_by_the_parser:
            status, _ = await raw_request(client, endpoint.method.encode() + b" " + path + b" HTTP/1.1\r\nHost: p\r\n" + header + b"\r\n\r\n")
            if status != 400:
                failures.append((endpoint.method, endpoint.path, header[:70], status))
    assert failures == []
    await assert_still_serving(client, alice)
    assert alice.token not in logged.text and alice.token[4:] not in logged.text
    assert [r.getMessage() for r in logged.records if r.levelno >= logging.ERROR] == []


# --- presence while Redis is away ----------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_presence_during_a_redis_outage_is_a_503_then_comes_back(
    aiohttp_client: Any, settings: Settings, private_redis: RedisServer
) -> None:
    client = await aiohttp_client(init_app(settings.model_copy(update={"redis_url": private_redis.url})))
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    await start_conversation(client, alice, bob)
    presence = f"/api/v1/users/{bob.id}/presence"
    assert (await (await client.get(presence, headers=alice.auth)).json())["status"] == "offline"

    private_redis.stop()
    during = await client.get(presence, headers=alice.auth)
    assert await error_of(during) == (503, "presence_unavailable")
    await assert_still_serving(client, alice)

    private_redis.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (after := await client.get(presence, headers=alice.auth)).status != 200:
        assert loop.time() < deadline, "presence did not come back with Redis"
        await asyncio.sleep(0.1)
    assert (await after.json())["status"] == "offline"


# --- every route, every class --------------------------------------------------------------------


def _fill(path: str, ids: dict[str, str], value: str | None = None) -> str:
    for name, real in ids.items():
        path = path.replace("{" + name + "}", value if value is not None else real)
    return path


def _json_bodies(endpoint: Endpoint, ids: dict[str, str]) -> Iterator[Any]:
    """Valid bodies for the route, each with one field (of the route's own) made hostile."""
    bases: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/api/v1/users"): {"username": "zed", "name": "Zed"},
        ("POST", "/api/v1/users/{user_id}/tokens"): {"name": "ci"},
        ("PATCH", "/api/v1/me/settings"): {"email_digest": "daily"},
        ("POST", "/api/v1/conversations"): {"user_id": ids["user_id"]},
        ("POST", "/api/v1/conversations/{conversation_id}/messages"): {"content": "hi"},
        ("POST", "/api/v1/conversations/{conversation_id}/read"): {"message_id": ids["message_id"]},
        ("POST", "/api/v1/webhooks"): {"url": "https://8.8.8.8/hook"},
        ("PATCH", "/api/v1/webhooks/{webhook_id}"): {"description": "d"},
    }
    base = bases.get((endpoint.method, endpoint.path), {})
    values: list[Any] = [*HOSTILE_STRINGS, *EXTREME_INTEGERS, *EXTREME_DATES, None, [], {}]
    assert endpoint.body is not None
    for name in endpoint.body.model_fields:
        for value in values:
            yield {**base, name: value}
            yield {**base, name: [value]}
    if "attachments" in endpoint.body.model_fields:
        for value in values:
            yield {"content": "hi", "attachments": [{"name": value, "url": "https://files.example.com/a", "size": value}]}
    if "message" in endpoint.body.model_fields:
        for value in values:
            yield {"user_id": ids["user_id"], "message": {"content": value, "client_id": value}}


async def test_no_route_answers_a_hostile_value_with_a_5xx(client: TestClient, make_person: MakePerson) -> None:
    """Every route: each class in each path parameter, query parameter and body field, as a user
    and as the admin. A refusal is a 4xx carrying a code; the server serves on afterwards."""
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    sent = await send(client, alice, conversation["id"], "hello")
    hook = await (await client.post("/api/v1/webhooks", json={"url": "https://8.8.8.8/hook"}, headers=alice.auth)).json()
    ids = {"conversation_id": conversation["id"], "user_id": bob.id, "message_id": sent["id"], "token_id": alice.token_id,
           "username": "bob", "attachment_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "webhook_id": hook["id"],
           "delivery_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}
    failures: list[tuple[Any, ...]] = []

    async def check(method: str, url: str | URL, **kwargs: Any) -> None:
        for headers in (alice.auth, ADMIN):
            response = await client.request(method, url, headers=headers, **kwargs)
            if response.status >= 500:
                failures.append((method, str(url)[:120], str(kwargs)[:80], response.status))
            elif response.status >= 400:
                body = await response.read()
                try:
                    code = json.loads(body)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = None
                if not code:
                    failures.append((method, str(url)[:120], str(kwargs)[:80], response.status, body[:80]))

    for endpoint in all_endpoints():
        if endpoint.path == "/api/v1/ws" or endpoint.upload_field is not None:
            continue  # the WebSocket and uploads have their own tests above
        for value in HOSTILE_URL_VALUES:
            if "{" in endpoint.path:
                await check(endpoint.method, URL(_fill(endpoint.path, ids, value), encoded=True))
        if endpoint.query is not None:
            for name in endpoint.query.model_fields:
                for value in HOSTILE_URL_VALUES:
                    await check(endpoint.method, URL(f"{_fill(endpoint.path, ids)}?{name}={value}", encoded=True))
        if endpoint.body is not None:
            for body in _json_bodies(endpoint, ids):
                await check(endpoint.method, _fill(endpoint.path, ids), data=json.dumps(body).encode())
    assert failures == []
    await assert_still_serving(client, alice)
