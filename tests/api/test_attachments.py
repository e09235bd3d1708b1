"""Uploading attachments, their types, limits and names, attaching them to messages, and who may
see them, on the local storage backend (tests/api/test_attachments_s3.py runs S3)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from integrations.media.processor import PillowAvProcessor
from integrations.storage.configured import storage_for
from parley.api.app import init_app
from parley.config import Settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.models import Attachment, Event
from parley.services.attachment_processing import MediaFacts, fail_abandoned, process_upload
from tests import media_samples
from tests.api.conftest import MakePerson, Person, provision, send, start_conversation
from tests.api.uploads import UPLOADS, process_uploads, upload, upload_response


def stored_files(settings: Settings) -> list[str]:
    """Every file under the storage root, staging included."""
    root = Path(settings.storage_path)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def attachment_rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Attachment)) or 0)


async def test_the_type_comes_from_the_content_not_the_name_or_declared_type(
    client: TestClient, make_person: MakePerson
) -> None:
    alice = await make_person("alice")
    created = await upload(client, alice, "report.pdf", media_samples.png(), "application/pdf")
    assert {k: created[k] for k in ("name", "content_type", "kind", "status")} == {
        "name": "report.pdf",
        "content_type": "image/png",
        "kind": "image",
        "status": "processing",
    }
    assert created["size"] == len(media_samples.png())
    assert {"id", "name", "content_type", "kind", "size", "status"} <= set(created)

    document = await upload(client, alice, "photo.jpg", media_samples.pdf(), "image/jpeg")
    assert (document["kind"], document["content_type"]) == ("document", "application/pdf")
    text = await upload(client, alice, "notes.jpg", "plain words, no picture\n".encode(), "image/jpeg")
    assert (text["kind"], text["content_type"]) == ("document", "text/plain")
    video = await upload(client, alice, "clip.bin", media_samples.mp4())
    assert (video["kind"], video["content_type"]) == ("video", "video/mp4")


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("photo.jpg", media_samples.elf_executable()),
        ("invoice.pdf", media_samples.windows_executable()),
        ("cat.jpg", b"#!/bin/sh\nrm -rf ~\n"),
    ],
)
async def test_executables_and_scripts_are_refused_and_leave_nothing(
    client: TestClient,
    make_person: MakePerson,
    settings: Settings,
    sessions: sessionmaker[Session],
    filename: str,
    data: bytes,
) -> None:
    alice = await make_person("alice")
    response = await upload_response(client, alice, filename, data, "image/jpeg")
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    assert stored_files(settings) == []
    assert await attachment_rows(sessions) == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_upload_is_a_413_and_leaves_nothing(
    aiohttp_client: Any,
    make_person: MakePerson,
    settings: Settings,
    sessions: sessionmaker[Session],
    chunked: bool,
) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 100_000})
    client = await aiohttp_client(init_app(small))
    alice = await provision(client, "alice")
    big = media_samples.png() + b"\x00" * 200_000
    response = await upload_response(client, alice, "big.png", big, chunked=chunked)
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "upload_too_large" and error["details"] == {"max_bytes": 100_000}
    assert stored_files(small) == []
    assert await attachment_rows(sessions) == 0
    # Exactly at the limit is fine.
    fits = media_samples.png() + b"\x00" * (100_000 - len(media_samples.png()))
    assert (await upload_response(client, alice, "fits.png", fits, chunked=chunked)).status == 201


async def test_requests_that_are_not_one_file_are_a_400(client: TestClient, make_person: MakePerson) -> None:
    alice = await make_person("alice")
    as_json = await client.post(UPLOADS, json={"file": "x"}, headers=alice.auth)
    no_file = await client.post(UPLOADS, data={"note": "no file here"}, headers=alice.auth)
    broken = await client.post(
        UPLOADS, data=b"--xx\r\nnonsense", headers={**alice.auth, "Content-Type": "multipart/form-data; boundary=xx"}
    )
    for response in (as_json, no_file, broken):
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["code"] == "invalid_upload"
    empty = await upload_response(client, alice, "empty.txt", b"")
    assert empty.status == 422
    assert (await client.post(UPLOADS, data=b"")).status == 401


async def test_names_are_sanitised_and_never_reach_storage(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice = await make_person("alice")
    sneaky = await upload(client, alice, "../../../etc/passwd\u202e\u0007.png", media_samples.png())
    assert sneaky["name"] == "passwd.png"
    long = await upload(client, alice, "x" * 500 + ".png", media_samples.png())
    assert len(long["name"]) == 200 and long["name"].endswith(".png")
    hidden = await upload(client, alice, "..", media_samples.png())
    assert hidden["name"] == "file.png"
    assert stored_files(settings) == sorted(f"attachments/{a['id']}/original" for a in (sneaky, long, hidden))


async def test_a_processed_jpeg_is_served_upright_without_gps_with_thumbnails(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice = await make_person("alice")
    original = media_samples.jpeg_with_gps(1600, 1200, orientation=6)
    assert media_samples.gps_of(original)  # the sample does carry coordinates
    created = await upload(client, alice, "holiday photo é.jpg", original)
    assert process_uploads(settings) == {created["id"]: "ready"}

    shown = await (await client.get(f"{UPLOADS}/{created['id']}", headers=alice.auth)).json()
    assert (shown["status"], shown["width"], shown["height"]) == ("ready", 1200, 1600)  # rotated
    assert [(t["size"], t["width"], t["height"]) for t in shown["thumbnails"]] == [(320, 240, 320), (1280, 960, 1280)]

    content = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth)
    assert content.status == 200
    served = await content.read()
    assert media_samples.gps_of(served) == {}
    with Image.open(io.BytesIO(served)) as image:
        assert image.size == (1200, 1600) and dict(image.getexif()) == {}
    assert content.headers["Content-Type"] == "image/jpeg"
    assert content.headers["X-Content-Type-Options"] == "nosniff"
    assert content.headers["Content-Disposition"] == (
        "inline; filename=\"holiday photo _.jpg\"; filename*=UTF-8''holiday%20photo%20%C3%A9.jpg"
    )
    # The original, GPS and all, is no longer stored.
    assert stored_files(settings) == sorted(
        f"attachments/{created['id']}/{name}" for name in ("content", "thumb-1280", "thumb-320")
    )

    ranged = await client.get(f"{UPLOADS}/{created['id']}/content", headers={**alice.auth, "Range": "bytes=0-99"})
    assert ranged.status == 206 and await ranged.read() == served[:100]
    assert ranged.headers["Content-Range"] == f"bytes 0-99/{len(served)}"

    for asked, long_side in ((320, 320), (100, 320), (321, 1280), (5000, 1280)):
        thumb = await client.get(f"{UPLOADS}/{created['id']}/thumbnail", params={"size": asked}, headers=alice.auth)
        assert thumb.status == 200 and thumb.headers["X-Content-Type-Options"] == "nosniff"
        with Image.open(io.BytesIO(await thumb.read())) as image:
            assert max(image.size) == long_side and dict(image.getexif()) == {}


async def test_an_opaque_png_is_served_as_a_png(client: TestClient, make_person: MakePerson, settings: Settings) -> None:
    alice = await make_person("alice")
    created = await upload(client, alice, "chart.png", media_samples.png(300, 200))
    process_uploads(settings)
    served = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth)
    assert served.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(await served.read())) as image, Image.open(io.BytesIO(media_samples.png(300, 200))) as sent:
        assert image.format == "PNG" and image.tobytes() == sent.tobytes()


async def test_a_webp_is_served_as_a_webp_without_gps(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice = await make_person("alice")
    original = media_samples.webp_with_gps()
    assert media_samples.gps_of(original)
    created = await upload(client, alice, "pic.webp", original)
    process_uploads(settings)
    served = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth)
    assert served.headers["Content-Type"] == "image/webp"
    assert media_samples.gps_of(await served.read()) == {}


async def test_png_gif_video_and_pdf_are_processed(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice = await make_person("alice")
    ids = {
        name: (await upload(client, alice, name, data))["id"]
        for name, data in (
            ("logo.png", media_samples.png(640, 480, alpha=True)),
            ("dance.gif", media_samples.animated_gif(200, 100)),
            ("clip.mp4", media_samples.mp4(320, 240)),
            ("brief.pdf", media_samples.pdf()),
        )
    }
    assert set(process_uploads(settings).values()) == {"ready"}

    async def shown(name: str) -> dict[str, Any]:
        return dict(await (await client.get(f"{UPLOADS}/{ids[name]}", headers=alice.auth)).json())

    logo = await shown("logo.png")
    assert (logo["width"], logo["height"]) == (640, 480)
    assert [(t["width"], t["height"]) for t in logo["thumbnails"]] == [(320, 240), (640, 480)]
    served_logo = await client.get(f"{UPLOADS}/{ids['logo.png']}/content", headers=alice.auth)
    assert served_logo.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(await served_logo.read())) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (640, 480))  # still lossless, transparent
    thumb = await client.get(f"{UPLOADS}/{ids['logo.png']}/thumbnail?size=320", headers=alice.auth)
    with Image.open(io.BytesIO(await thumb.read())) as image:
        assert image.format == "PNG" and image.mode == "RGBA"  # transparency kept

    gif = await shown("dance.gif")
    assert (gif["width"], gif["height"], gif["status"]) == (200, 100, "ready")
    served_gif = await (await client.get(f"{UPLOADS}/{ids['dance.gif']}/content", headers=alice.auth)).read()
    assert served_gif == media_samples.animated_gif(200, 100)  # still animated: served as uploaded

    clip = await shown("clip.mp4")
    assert (clip["width"], clip["height"], clip["codec"]) == (320, 240, "h264")
    assert clip["duration_seconds"] == pytest.approx(1.0, abs=0.15)
    assert media_samples.video_facts(media_samples.mp4())[0]["location"] == media_samples.VIDEO_LOCATION
    served_clip = await (await client.get(f"{UPLOADS}/{ids['clip.mp4']}/content", headers=alice.auth)).read()
    metadata, frames = media_samples.video_facts(served_clip)
    assert "location" not in metadata and "title" not in metadata and frames == 10  # same video, no metadata
    poster = await client.get(f"{UPLOADS}/{ids['clip.mp4']}/thumbnail", headers=alice.auth)
    with Image.open(io.BytesIO(await poster.read())) as image:
        assert image.size == (320, 240)

    brief = await shown("brief.pdf")
    assert (brief["kind"], brief["thumbnails"], brief["width"]) == ("document", [], None)
    served_pdf = await client.get(f"{UPLOADS}/{ids['brief.pdf']}/content", headers=alice.auth)
    assert await served_pdf.read() == media_samples.pdf()
    assert served_pdf.headers["Content-Disposition"].startswith("attachment; ")
    no_thumb = await client.get(f"{UPLOADS}/{ids['brief.pdf']}/thumbnail", headers=alice.auth)
    assert no_thumb.status == 404 and (await no_thumb.json())["error"]["code"] == "no_thumbnail"


@pytest.mark.parametrize(
    ("sample", "reason"),
    [(media_samples.png_bomb, "decompression bomb"), (media_samples.truncated_jpeg, "corrupt or truncated")],
)
async def test_bombs_and_broken_images_fail_with_a_reason(
    client: TestClient, make_person: MakePerson, settings: Settings, sample: Any, reason: str
) -> None:
    alice = await make_person("alice")
    created = await upload(client, alice, "picture.png", sample())
    assert process_uploads(settings) == {created["id"]: "failed"}
    shown = await (await client.get(f"{UPLOADS}/{created['id']}", headers=alice.auth)).json()
    assert shown["status"] == "failed" and reason in shown["failure_reason"]
    content = await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth)
    assert content.status == 409 and (await content.json())["error"]["code"] == "attachment_not_ready"


async def test_processing_ends_with_an_event_for_the_conversation(
    client: TestClient, make_person: MakePerson, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    good = await upload(client, alice, "a.png", media_samples.png())
    bad = await upload(client, alice, "b.jpg", media_samples.truncated_jpeg())
    await send(client, alice, conversation["id"], "two files", attachment_ids=[good["id"]])
    process_uploads(settings)
    with sessions() as session:
        events = {e.type: e for e in (session.scalars(select(Event).where(Event.type.like("attachment.%"))))}
    assert set(events) == {"attachment.uploaded", "attachment.ready", "attachment.failed"}
    assert events["attachment.ready"].conversation_id == conversation["id"]
    assert events["attachment.ready"].payload["attachment"]["id"] == good["id"]
    assert events["attachment.failed"].conversation_id is None  # not sent anywhere yet
    assert events["attachment.failed"].payload["attachment"]["failure_reason"]
    assert bad["id"] == events["attachment.failed"].payload["attachment"]["id"]


async def test_sending_attaches_only_the_senders_unused_uploads(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    mine = await upload(client, alice, "mine.png", media_samples.png())
    theirs = await upload(client, bob, "theirs.png", media_samples.png())
    broken = await upload(client, alice, "broken.jpg", media_samples.truncated_jpeg())
    process_uploads(settings)
    path = f"/api/v1/conversations/{conversation['id']}/messages"

    async def refused(ids: list[str]) -> dict[str, Any]:
        response = await client.post(path, json={"content": "x", "attachment_ids": ids}, headers=alice.auth)
        assert response.status == 422, await response.text()
        return dict((await response.json())["error"])

    for ids, named in (
        ([theirs["id"]], theirs["id"]),
        ([broken["id"]], broken["id"]),
        (["nope"], "nope"),
        ([mine["id"], mine["id"]], mine["id"]),
    ):
        error = await refused(ids)
        assert error["code"] == "attachment_not_usable" and error["details"]["attachment_id"] == named

    sent = await send(
        client,
        alice,
        conversation["id"],
        "with a file",
        client_id="c1",
        attachment_ids=[mine["id"]],
        attachments=[{"name": "link.pdf", "url": "https://e.com/l.pdf"}],
    )
    assert [(a["name"], a["status"]) for a in sent["attachments"]] == [("mine.png", "ready"), ("link.pdf", "ready")]
    assert sent["attachments"][0]["url"] == f"/api/v1/attachments/{mine['id']}/content"
    assert sent["attachments"][0]["thumbnails"][0]["url"].endswith("/thumbnail?size=320")
    error = await refused([mine["id"]])  # used once already
    assert error["details"]["reason"] == "already attached to a message"
    history = await (await client.get(path, headers=bob.auth)).json()
    assert [a["id"] for a in history["items"][-1]["attachments"]] == [a["id"] for a in sent["attachments"]]


async def test_only_the_uploader_then_the_conversations_members_see_an_attachment(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice, bob, carol = await make_person("alice"), await make_person("bob"), await make_person("carol")
    conversation = await start_conversation(client, alice, bob)
    created = await upload(client, alice, "a.jpg", media_samples.jpeg_with_gps(400, 300))
    process_uploads(settings)
    routes = [
        f"{UPLOADS}/{created['id']}",
        f"{UPLOADS}/{created['id']}/content",
        f"{UPLOADS}/{created['id']}/thumbnail",
    ]

    async def statuses(person: Person | None) -> list[int]:
        headers = person.auth if person is not None else {}
        return [(await client.get(route, headers=headers)).status for route in routes]

    assert await statuses(alice) == [200, 200, 200]
    assert await statuses(bob) == [404, 404, 404]  # not sent yet: only its uploader knows it
    assert await statuses(None) == [401, 401, 401]
    await send(client, alice, conversation["id"], "look", attachment_ids=[created["id"]])
    assert await statuses(bob) == [200, 200, 200]
    assert await statuses(carol) == [404, 404, 404]
    for response in [await client.get(route, headers=carol.auth) for route in routes]:
        assert (await response.json())["error"]["code"] == "not_found"


async def test_deleting_the_message_removes_its_uploads_and_records_their_deletion(
    client: TestClient, make_person: MakePerson, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    created = await upload(client, alice, "a.png", media_samples.png())
    sent = await send(
        client,
        alice,
        conversation["id"],
        "oops",
        attachment_ids=[created["id"]],
        attachments=[{"name": "l.pdf", "url": "https://e.com/l.pdf"}],
    )
    assert (await client.delete(f"/api/v1/messages/{sent['id']}", headers=alice.auth)).status == 200
    assert (await client.get(f"{UPLOADS}/{created['id']}", headers=alice.auth)).status == 404
    with sessions() as session:
        deleted = (session.scalars(select(Event).where(Event.type == "attachment.deleted"))).one()
    assert deleted.payload == {"attachment_ids": [created["id"]], "message_id": sent["id"]}
    assert deleted.conversation_id == conversation["id"]


async def test_processing_that_never_finishes_ends_as_failed(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice = await make_person("alice")
    created = await upload(client, alice, "a.png", media_samples.png())
    engine = create_sync_db_engine(settings)
    try:
        sessions = sync_session_factory(engine)
        assert fail_abandoned(sessions, older_than_seconds=3600) == []  # too young to give up on
        assert fail_abandoned(sessions, older_than_seconds=0) == [created["id"]]
    finally:
        engine.dispose()
    shown = await (await client.get(f"{UPLOADS}/{created['id']}", headers=alice.auth)).json()
    assert shown["status"] == "failed" and "did not finish" in shown["failure_reason"]
    assert process_uploads(settings) == {}  # a late task finds nothing to do


async def test_an_upright_jpeg_loses_its_metadata_but_not_a_pixel(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice = await make_person("alice")
    original = media_samples.jpeg_with_gps(1024, 768, orientation=1)
    created = await upload(client, alice, "upright.jpg", original)
    process_uploads(settings)
    served = await (await client.get(f"{UPLOADS}/{created['id']}/content", headers=alice.auth)).read()
    assert media_samples.gps_of(served) == {} and b"Parley Test Camera" not in served
    with Image.open(io.BytesIO(served)) as cleaned, Image.open(io.BytesIO(original)) as uploaded:
        assert dict(cleaned.getexif()) == {}
        assert cleaned.tobytes() == uploaded.tobytes()  # not re-encoded


async def test_the_upload_is_documented_as_a_multipart_form(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    upload_doc = document["paths"]["/api/v1/attachments"]["post"]
    form = upload_doc["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary", "minLength": 1, "description": "Not empty."}
    assert form["additionalProperties"] is False
    assert {"201", "400", "401", "413", "415"} <= set(upload_doc["responses"])


class _DeletedMeanwhile(PillowAvProcessor):
    """The real processor, with the upload's row deleted while it works (the race with a message
    deletion or the purge)."""

    def __init__(self, settings: Settings, attachment_id: str) -> None:
        super().__init__(settings.max_image_pixels)
        self.settings, self.attachment_id = settings, attachment_id

    def image(self, path: Path) -> MediaFacts:
        facts = super().image(path)
        engine = create_sync_db_engine(self.settings)
        with engine.begin() as connection:
            connection.execute(delete(Attachment).where(Attachment.id == self.attachment_id))
        engine.dispose()
        return facts


async def test_processing_is_idempotent_and_cleans_up_after_a_deleted_upload(
    client: TestClient, make_person: MakePerson, settings: Settings
) -> None:
    alice = await make_person("alice")
    done = await upload(client, alice, "done.jpg", media_samples.jpeg_with_gps(800, 600))
    assert process_uploads(settings) == {done["id"]: "ready"}
    files = stored_files(settings)
    storage = storage_for(settings)
    engine = create_sync_db_engine(settings)
    try:
        sessions = sync_session_factory(engine)
        processor = PillowAvProcessor(settings.max_image_pixels)
        # A redelivered task (its worker died after the commit) changes nothing.
        assert process_upload(sessions, storage, processor, done["id"]) == "not_pending"
        assert stored_files(settings) == files

        doomed = await upload(client, alice, "doomed.jpg", media_samples.jpeg_with_gps(800, 600))
        outcome = process_upload(sessions, storage, _DeletedMeanwhile(settings, doomed["id"]), doomed["id"])
    finally:
        engine.dispose()
    assert outcome == "gone"
    assert stored_files(settings) == files  # what the run had stored for it is gone again


@pytest.mark.parametrize(
    "original",
    [
        media_samples.jpeg_with_gps(1600, 1200, orientation=6),  # re-encoded upright
        media_samples.jpeg_with_gps(1024, 768, orientation=1),  # metadata cut out losslessly
        media_samples.webp_with_gps(),
        media_samples.mp4(),  # remuxed without container metadata
    ],
    ids=["rotated-jpeg", "upright-jpeg", "webp", "mp4"],
)
async def test_after_processing_the_metadata_describes_the_file_served(
    client: TestClient, make_person: MakePerson, settings: Settings, sessions: sessionmaker[Session],
    original: bytes,
) -> None:
    alice, bob = await make_person("alice"), await make_person("bob")
    conversation = await start_conversation(client, alice, bob)
    created = await upload(client, alice, "photo", original)
    assert created["size"] == len(original)
    sent = await send(client, alice, conversation["id"], "look", attachment_ids=[created["id"]])
    assert process_uploads(settings) == {created["id"]: "ready"}

    content = await client.get(f"{UPLOADS}/{created['id']}/content", headers=bob.auth)
    served = await content.read()
    assert len(served) != len(original)  # the cleaned copy, not the upload
    shown = await (await client.get(f"{UPLOADS}/{created['id']}", headers=bob.auth)).json()
    assert (shown["size"], shown["content_type"]) == (len(served), content.headers["Content-Type"])
    history = await (await client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=bob.auth)).json()
    [message] = [m for m in history["items"] if m["id"] == sent["id"]]
    assert message["attachments"][0]["size"] == len(served)
    with sessions() as session:
        ready = (session.scalars(select(Event).where(Event.type == "attachment.ready"))).one()
    assert ready.payload["attachment"]["size"] == len(served)
