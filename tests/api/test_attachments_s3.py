"""Attachments on the S3 backend: boto3 against moto's S3 server over HTTP. Content and thumbnails
redirect to presigned URLs, which the test then fetches like a browser would."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from integrations.storage.configured import storage_for
from parley.api.app import init_app
from parley.config import Settings, load_settings
from parley.models import Event
from parley.services.attachment_processing import remove_files
from tests import media_samples
from tests.api.conftest import MakePerson, send, start_conversation
from tests.api.uploads import UPLOADS, process_uploads, upload, upload_response
from tests.s3_server import S3Endpoint

@pytest.fixture
def bucket(s3_endpoint: S3Endpoint) -> str:
    return s3_endpoint.new_bucket()


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: S3Endpoint, bucket: str) -> Settings:
    return load_settings(**{**settings.model_dump(), **s3_endpoint.settings_for(bucket), "presigned_url_seconds": 120})


@pytest.fixture
async def client(aiohttp_client: Any, s3_settings: Settings) -> TestClient:
    return await aiohttp_client(init_app(s3_settings))


async def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read(), dict(response.headers)


async def test_uploads_go_to_the_bucket_and_are_served_through_presigned_urls(
    client: TestClient,
    make_person: MakePerson,
    s3_settings: Settings,
    s3_endpoint: S3Endpoint,
    bucket: str,
) -> None:
    alice = await make_person("alice")
    created = await upload(client, alice, "gps.jpg", media_samples.jpeg_with_gps(1600, 1200))
    assert s3_endpoint.keys(bucket) == [f"attachments/{created['id']}/original"]
    assert process_uploads(s3_settings) == {created["id"]: "ready"}
    assert s3_endpoint.keys(bucket) == sorted(
        f"attachments/{created['id']}/{name}" for name in ("content", "thumb-1280", "thumb-320")
    )

    content = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth, allow_redirects=False)
    assert content.status == 302
    assert content.headers["X-Content-Type-Options"] == "nosniff"
    location = content.headers["Location"]
    assert location.startswith(f"{s3_endpoint.url}/{bucket}/attachments/{created['id']}/content?")
    assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["120"]  # PARLEY_PRESIGNED_URL_SECONDS
    status, body, headers = await fetch(location)
    assert status == 200 and media_samples.gps_of(body) == {}
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Disposition"] == "inline; filename=\"gps.jpg\"; filename*=UTF-8''gps.jpg"

    thumb = await client.get(f"{UPLOADS}/{created['id']}/thumbnail?size=320", headers=alice.auth, allow_redirects=False)
    status, body, _ = await fetch(thumb.headers["Location"])
    with Image.open(io.BytesIO(body)) as image:
        assert status == 200 and image.size == (240, 320)


async def test_refused_uploads_leave_nothing_in_the_bucket(
    aiohttp_client: Any,
    make_person: MakePerson,
    s3_settings: Settings,
    s3_endpoint: S3Endpoint,
    bucket: str,
) -> None:
    alice = await make_person("alice")
    client = await aiohttp_client(init_app(load_settings(**{**s3_settings.model_dump(), "max_upload_bytes": 50_000})))
    too_big = await upload_response(client, alice, "big.png", media_samples.png() + b"\x00" * 60_000, chunked=True)
    executable = await upload_response(client, alice, "photo.jpg", media_samples.elf_executable())
    assert (too_big.status, executable.status) == (413, 415)
    assert s3_endpoint.keys(bucket) == []


async def test_others_get_no_redirect_and_deletion_empties_the_bucket(
    client: TestClient,
    make_person: MakePerson,
    s3_settings: Settings,
    s3_endpoint: S3Endpoint,
    bucket: str,
    sessions: sessionmaker[Session],
) -> None:
    alice, bob, carol = await make_person("alice"), await make_person("bob"), await make_person("carol")
    conversation = await start_conversation(client, alice, bob)
    clip = await upload(client, alice, "clip.mp4", media_samples.mp4())
    kept = await upload(client, alice, "kept.png", media_samples.png())
    process_uploads(s3_settings)
    sent = await send(client, alice, conversation["id"], "a clip", attachment_ids=[clip["id"]])
    for path in (f"{UPLOADS}/{clip['id']}/content", f"{UPLOADS}/{clip['id']}/thumbnail"):
        assert (await client.get(path, headers=carol.auth, allow_redirects=False)).status == 404
        assert (await client.get(path, headers=bob.auth, allow_redirects=False)).status == 302

    await client.delete(f"/api/v1/messages/{sent['id']}", headers=alice.auth)
    with sessions() as session:
        deleted = (session.scalars(select(Event).where(Event.type == "attachment.deleted"))).one()
    # What the media worker does with that event (tests/workers/test_media_pipeline.py runs it there).
    remove_files(storage_for(s3_settings), deleted.payload["attachment_ids"])
    assert s3_endpoint.keys(bucket) == [
        f"attachments/{kept['id']}/content",
        f"attachments/{kept['id']}/thumb-1280",
        f"attachments/{kept['id']}/thumb-320",
    ]


async def test_an_unreachable_bucket_is_a_503_and_leaves_nothing(
    aiohttp_client: Any, make_person: MakePerson, s3_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    alice = await make_person("alice")
    missing = load_settings(**{**s3_settings.model_dump(), "s3_bucket": "no-such-bucket"})
    client = await aiohttp_client(init_app(missing))
    response = await upload_response(client, alice, "a.png", media_samples.png())
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "storage_unavailable"
    with sessions() as session:
        assert (session.scalars(select(Event).where(Event.type == "attachment.uploaded"))).first() is None
    assert list(Path(missing.storage_path).rglob("upload-*")) == []  # no staging file left either


async def test_presigned_urls_can_name_the_endpoint_browsers_reach(
    aiohttp_client: Any, make_person: MakePerson, s3_settings: Settings, s3_endpoint: S3Endpoint
) -> None:
    # The API talks to the store as 127.0.0.1; browsers are told "localhost" (the same server here).
    public = s3_endpoint.url.replace("127.0.0.1", "localhost")
    settings = load_settings(**{**s3_settings.model_dump(), "s3_public_endpoint_url": public})
    client = await aiohttp_client(init_app(settings))
    alice = await make_person("alice")
    created = await upload(client, alice, "doc.pdf", media_samples.pdf())
    process_uploads(settings)
    redirect = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth, allow_redirects=False)
    assert redirect.headers["Location"].startswith(f"{public}/")
    status, body, headers = await fetch(redirect.headers["Location"])
    assert (status, body) == (200, media_samples.pdf())
    assert headers["Content-Disposition"].startswith("attachment; ")
