"""Media processing end to end: the real API, real Celery worker processes on the real broker, the
outbox in between. Uploads become ready (or failed) on the worker, deleting a message removes its
files, and beat's purge removes uploads never attached."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from parley.api.app import init_app
from tests import media_samples
from tests.api.conftest import Person, provision, start_conversation
from tests.api.uploads import UPLOADS, upload
from tests.s3_server import S3Endpoint
from tests.workers.conftest import Processes, WorkerSetup, wait_for_worker
from workers.celery_app import create_celery_app
from workers.media_task_names import PURGE_TASK

TIMEOUT = 60.0


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll `check` (without blocking the API's event loop, which the nudges need) until it returns
    something truthy; fail naming `what` at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def files_of(storage: Path, attachment_id: str) -> list[str]:
    folder = storage / "attachments" / attachment_id
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("configuration", ["postgres_redis", "sqlite_embedded"])
async def test_uploads_are_processed_by_a_worker_and_deleted_with_their_message(
    configuration: str, request: pytest.FixtureRequest, processes: Processes, aiohttp_client: Any
) -> None:
    setup: WorkerSetup = request.getfixturevalue(configuration)
    storage = setup.directory / "storage"
    settings = setup.settings(storage_path=str(storage))
    worker = processes.worker(setup, env={"PARLEY_STORAGE_PATH": str(storage)})
    wait_for_worker(worker)
    client = await aiohttp_client(init_app(settings))
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    conversation = await start_conversation(client, alice, bob)

    photo = await upload(client, alice, "photo.jpg", media_samples.jpeg_with_gps(2000, 1500))
    clip = await upload(client, alice, "clip.mp4", media_samples.mp4())
    bomb = await upload(client, alice, "bomb.png", media_samples.png_bomb())
    sent = await (
        await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "holiday", "attachment_ids": [photo["id"], clip["id"]]},
            headers=alice.auth,
        )
    ).json()

    async def status(person_: Person, attachment_id: str) -> dict[str, Any] | None:
        shown = await (await client.get(f"{UPLOADS}/{attachment_id}", headers=person_.auth)).json()
        return shown if shown.get("status") in ("ready", "failed") else None

    log = worker.output
    photo_done = await eventually(lambda: status(bob, photo["id"]), f"the photo to be processed\n{log()[-3000:]}")
    clip_done = await eventually(lambda: status(bob, clip["id"]), "the clip to be processed")
    bomb_done = await eventually(lambda: status(alice, bomb["id"]), "the bomb to fail")

    assert (photo_done["status"], photo_done["width"], photo_done["height"]) == ("ready", 1500, 2000)
    served = await (await client.get(f"{UPLOADS}/{photo['id']}/content", headers=bob.auth)).read()
    assert media_samples.gps_of(served) == {}
    thumb = await (await client.get(f"{UPLOADS}/{photo['id']}/thumbnail?size=1280", headers=bob.auth)).read()
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.size == (960, 1280)
    assert (clip_done["status"], clip_done["codec"], clip_done["width"]) == ("ready", "h264", 320)
    assert bomb_done["status"] == "failed" and "decompression bomb" in bomb_done["failure_reason"]
    assert worker.popen.poll() is None  # the bomb did not take the worker down
    assert files_of(storage, photo["id"]) == ["content", "thumb-1280", "thumb-320"]

    # Deleting the message removes its files, on the worker, through the outbox.
    assert (await client.delete(f"/api/v1/messages/{sent['id']}", headers=alice.auth)).status == 200

    async def gone() -> bool:
        return files_of(storage, photo["id"]) == [] and files_of(storage, clip["id"]) == []

    await eventually(gone, "the message's files to be deleted")
    assert files_of(storage, bomb["id"]) == ["original"]  # not in the message: untouched

    # Beat's purge of uploads never attached (sent here directly, with a worker whose maximum age is
    # short, rather than waiting for beat's schedule).
    purging = processes.worker(
        setup, env={"PARLEY_STORAGE_PATH": str(storage), "PARLEY_UNATTACHED_UPLOAD_MAX_AGE": "0.001"}, concurrency=1
    )
    wait_for_worker(purging)
    worker.stop()
    create_celery_app(settings).send_task(PURGE_TASK)

    async def purged() -> bool:
        response = await client.get(f"{UPLOADS}/{bomb['id']}", headers=alice.auth)
        return response.status == 404 and files_of(storage, bomb["id"]) == []

    await eventually(purged, "the unattached upload to be purged")


async def test_on_s3_a_worker_processes_uploads_and_deletion_empties_the_bucket(
    postgres_redis: WorkerSetup,
    processes: Processes,
    aiohttp_client: Any,
    s3_endpoint: S3Endpoint,
) -> None:
    bucket = s3_endpoint.new_bucket()
    storage_settings = s3_endpoint.settings_for(bucket)
    settings = postgres_redis.settings(storage_path=str(postgres_redis.directory / "staging"), **storage_settings)
    env = {f"PARLEY_{name.upper()}": str(value) for name, value in storage_settings.items()}
    worker = processes.worker(postgres_redis, env=env)
    wait_for_worker(worker)
    client = await aiohttp_client(init_app(settings))
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    conversation = await start_conversation(client, alice, bob)
    photo = await upload(client, alice, "photo.jpg", media_samples.jpeg_with_gps(1600, 1200, orientation=1))
    sent = await (
        await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "from the bucket", "attachment_ids": [photo["id"]]},
            headers=alice.auth,
        )
    ).json()

    async def ready() -> bool:
        shown = await (await client.get(f"{UPLOADS}/{photo['id']}", headers=bob.auth)).json()
        return shown.get("status") == "ready"

    await eventually(ready, "the photo to be processed")
    redirect = await client.get(f"{UPLOADS}/{photo['id']}/content", headers=bob.auth, allow_redirects=False)
    async with aiohttp.ClientSession() as browser, browser.get(redirect.headers["Location"]) as response:
        assert response.status == 200 and media_samples.gps_of(await response.read()) == {}
    prefix = f"attachments/{photo['id']}/"
    assert [k.removeprefix(prefix) for k in s3_endpoint.keys(bucket)] == ["content", "thumb-1280", "thumb-320"]

    await client.delete(f"/api/v1/messages/{sent['id']}", headers=alice.auth)

    async def emptied() -> bool:
        return s3_endpoint.keys(bucket) == []

    await eventually(emptied, "the bucket to be emptied by the worker")
