"""Uploading through the API, and processing uploads in the test's own process (the worker tests
run the same service code in real Celery workers)."""

from __future__ import annotations

import secrets
from urllib.parse import quote
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from integrations.media.processor import PillowAvProcessor
from integrations.storage.configured import storage_for
from parley.config import Settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.models import Attachment, AttachmentStatus
from parley.services.attachment_processing import process_upload
from tests.api.conftest import Person

UPLOADS = "/api/v1/attachments"


def multipart_body(filename: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    if filename.isascii() and filename.isprintable() and '"' not in filename:
        name_param = f'filename="{filename}"'
    else:  # RFC 5987, as browsers send names that a quoted header value cannot carry
        name_param = f"filename*=UTF-8''{quote(filename, safe='')}"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; {name_param}\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def upload_response(
    client: TestClient,
    person: Person,
    filename: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    *,
    chunked: bool = False,
) -> Any:
    body, form_type = multipart_body(filename, data, content_type)
    payload: Any = body
    if chunked:
        # No Content-Length: the server cannot refuse early and must count while it streams.

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        payload = chunks()
    return await client.post(UPLOADS, data=payload, headers={**person.auth, "Content-Type": form_type})


async def upload(
    client: TestClient,
    person: Person,
    filename: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    **kwargs: Any,
) -> dict[str, Any]:
    response = await upload_response(client, person, filename, data, content_type, **kwargs)
    assert response.status == 201, await response.text()
    return dict(await response.json())


def process_uploads(settings: Settings) -> dict[str, str]:
    """Run the media processing of every upload still `processing`, as a media worker would."""
    engine = create_sync_db_engine(settings)
    try:
        sessions = sync_session_factory(engine)
        with sessions() as session:
            pending = list(
                session.scalars(select(Attachment.id).where(Attachment.status == AttachmentStatus.PROCESSING))
            )
        storage = storage_for(settings)
        processor = PillowAvProcessor(settings.max_image_pixels)
        return {attachment_id: process_upload(sessions, storage, processor, attachment_id) for attachment_id in pending}
    finally:
        engine.dispose()
