"""Attachments: uploading a file, its metadata, its content and thumbnails."""

from __future__ import annotations

import asyncio
import contextlib
import re

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from integrations.media.sniffing import sniff
from parley.api.auth import current_user
from parley.api.endpoints import EndpointTable, parse_query, respond
from parley.api.errors import ApiError
from parley.api.keys import SETTINGS, STORAGE
from parley.api.service_calls import call
from parley.api.schemas import ThumbnailQuery
from parley.errors import TooLarge
from parley.models import User
from parley.schemas import UploadOut
from parley.services import attachments
from parley.services.storage import LocalFile, RedirectTo, StorageUnavailable, StoredObjectMissing, attachment_prefix
from parley.services.uploads import UploadStaging, staging_directory

endpoints = EndpointTable(tag="attachments")

CHUNK_BYTES = 256 * 1024
# Multipart framing around the file: boundaries and part headers.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# What aiohttp's multipart reader raises on a malformed body.
MALFORMED = (ValueError, AssertionError, RuntimeError, HttpProcessingError)


def _bad_upload(message: str) -> ApiError:
    return ApiError(400, "invalid_upload", message)


async def _file_part(request: web.Request) -> tuple[MultipartReader, BodyPartReader]:
    """The form's one part: a file. Like unknown JSON fields, other fields are refused."""
    if request.content_type != "multipart/form-data":
        raise _bad_upload("send the file as multipart/form-data, in a part with a filename")
    try:
        reader = await request.multipart()
        part = await reader.next()
        if part is None:
            raise _bad_upload("the form has no file part")
        if not isinstance(part, BodyPartReader) or part.filename is None or part.name != "file":
            raise _unexpected_field(part)
        return reader, part
    except MALFORMED as exc:
        raise _bad_upload(f"malformed multipart body: {exc}") from None


def _unexpected_field(part: object) -> ApiError:
    name = getattr(part, "name", None)
    return ApiError(422, "validation_error", "the form takes one field: file, with a filename",
                    {"fields": [{"field": str(name), "message": "send only the file, in a part named file"}]})


async def _no_more_parts(reader: MultipartReader) -> None:
    try:
        extra = await reader.next()
    except MALFORMED as exc:
        raise _bad_upload(f"malformed multipart body: {exc}") from None
    if extra is not None:
        raise _unexpected_field(extra)


async def _receive(part: BodyPartReader, staging: UploadStaging) -> None:
    """Stream the part into the staging file, a chunk at a time; past the limit, stop reading."""
    try:
        while chunk := await part.read_chunk(CHUNK_BYTES):
            await asyncio.to_thread(staging.add, chunk)
    except MALFORMED as exc:
        raise _bad_upload(f"malformed multipart body: {exc}") from None
    finally:
        await asyncio.to_thread(staging.finish)


@endpoints.route(
    "POST",
    "/api/v1/attachments",
    summary="Upload one file (multipart/form-data, a part with a filename): 201, `processing` until a media "
    "worker has made it `ready`. Attach it by sending a message with `attachment_ids`.",
    responses={201: UploadOut},
    errors=(400, 413, 415, 422, 503),
    upload_field="file",
)
async def upload_attachment(request: web.Request) -> web.Response:
    user = current_user(request)
    settings = request.app[SETTINGS]
    limit = settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD_BYTES:
        # Refused before a byte is read.
        raise TooLarge(f"the file is larger than {limit} bytes", details={"max_bytes": limit})
    reader, part = await _file_part(request)
    staging = await asyncio.to_thread(UploadStaging, staging_directory(settings.storage_path), limit)
    try:
        await _receive(part, staging)
        await _no_more_parts(reader)
    except BaseException:
        await asyncio.to_thread(staging.discard)
        raise
    try:
        sniffed = sniff(staging.head)
        attachments.check_upload(sniffed, staging.size)
        view = await _store_upload(request, user, staging, sniffed, part.filename)
    finally:
        await asyncio.to_thread(staging.discard)
    return respond(view, 201)


async def _store_upload(
    request: web.Request, user: User, staging: UploadStaging, sniffed: attachments.SniffedType, raw_name: str | None
) -> UploadOut:
    """Store the bytes, then record the upload. A failure leaves nothing behind: no row, and the
    stored file removed (should storage fail again, the stray file is unreachable: no row names it)."""
    storage = request.app[STORAGE]
    attachment_id, key = attachments.new_upload_key()
    await asyncio.to_thread(storage.store_file, key, staging.path, sniffed.content_type)
    try:
        return await call(request, attachments.record_upload, user, attachment_id, key, sniffed, staging.size, raw_name)
    except BaseException:
        with contextlib.suppress(StorageUnavailable):
            await asyncio.to_thread(storage.delete_prefix, attachment_prefix(attachment_id))
        raise


@endpoints.route(
    "GET",
    "/api/v1/attachments/{attachment_id}",
    summary="An attachment's metadata: for its uploader before it is sent, the conversation's members after",
    responses={200: UploadOut},
    errors=(404,),
)
async def get_attachment(request: web.Request) -> web.Response:
    user = current_user(request)
    return respond(await call(request, attachments.show_attachment, user, request.match_info["attachment_id"]))


# A content type fit for a header. Uploads are sniffed into a known set, but rows stored before
# that rule (an OpenDocument "mimetype" entry copied verbatim) may hold NUL or CR/LF.
PLAIN_CONTENT_TYPE = re.compile(r"[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+")
FALLBACK_CONTENT_TYPE = "application/octet-stream"


async def _serve(request: web.Request, serving: attachments.Serving, attachment_id: str) -> web.StreamResponse:
    storage = request.app[STORAGE]
    try:
        location = await asyncio.to_thread(
            storage.locate, serving.key, content_type=serving.content_type, disposition=serving.disposition
        )
    except StoredObjectMissing:
        raise _missing(attachment_id) from None
    headers = {
        "Content-Disposition": serving.disposition,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=300",
    }
    if isinstance(location, RedirectTo):
        # Short-lived presigned URL: never cached longer than it lives.
        headers["Cache-Control"] = "private, no-store"
        raise web.HTTPFound(location.url, headers=headers)
    assert isinstance(location, LocalFile)
    # FileResponse streams from disk and answers Range requests (206, 416) itself.
    content_type = serving.content_type if PLAIN_CONTENT_TYPE.fullmatch(serving.content_type) else FALLBACK_CONTENT_TYPE
    return web.FileResponse(location.path, headers={**headers, "Content-Type": content_type})


def _missing(attachment_id: str) -> ApiError:
    return ApiError(404, "not_found", "the attachment's file is gone", {"attachment_id": attachment_id})


@endpoints.route(
    "GET",
    "/api/v1/attachments/{attachment_id}/content",
    summary="The file (Range requests supported), or a redirect to a short-lived S3 URL; 409 while processing",
    responses={200: None, 302: None},
    errors=(404, 409),
)
async def get_attachment_content(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    attachment_id = request.match_info["attachment_id"]
    serving = await call(request, attachments.serve_content, user, attachment_id)
    return await _serve(request, serving, attachment_id)


@endpoints.route(
    "GET",
    "/api/v1/attachments/{attachment_id}/thumbnail",
    summary="A thumbnail of an image or video: the smallest at least `size` pixels on its long side",
    query=ThumbnailQuery,
    responses={200: None, 302: None},
    errors=(404, 409),
)
async def get_attachment_thumbnail(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    query = parse_query(request, ThumbnailQuery)
    attachment_id = request.match_info["attachment_id"]
    serving = await call(request, attachments.serve_thumbnail, user, attachment_id, query.size)
    return await _serve(request, serving, attachment_id)
