"""Attachments as the world sees them: the same shapes in messages, upload responses and events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parley.models import Attachment, AttachmentStatus
from parley.schemas import AttachmentOut, ThumbnailOut, UploadOut

API_PREFIX = "/api/v1/attachments"

# The columns a message's attachment list needs (message_views selects these).
ATTACHMENT_VIEW_COLUMNS = (
    Attachment.message_id,
    Attachment.id,
    Attachment.name,
    Attachment.url,
    Attachment.kind,
    Attachment.content_type,
    Attachment.size,
    Attachment.status,
    Attachment.width,
    Attachment.height,
    Attachment.duration_seconds,
    Attachment.thumbnails,
)


def content_url(attachment_id: str) -> str:
    return f"{API_PREFIX}/{attachment_id}/content"


def thumbnail_url(attachment_id: str, size: int) -> str:
    return f"{API_PREFIX}/{attachment_id}/thumbnail?size={size}"


def _thumbnails(attachment_id: str, stored: list[dict[str, Any]] | None) -> list[ThumbnailOut]:
    return [
        ThumbnailOut(size=t["size"], width=t["width"], height=t["height"], url=thumbnail_url(attachment_id, t["size"]))
        for t in stored or []
    ]


def attachment_out(values: Mapping[str, Any]) -> AttachmentOut:
    """From a row mapping holding ATTACHMENT_VIEW_COLUMNS."""
    return AttachmentOut(
        id=values["id"],
        name=values["name"],
        url=values["url"],
        kind=values["kind"],
        content_type=values["content_type"],
        size=values["size"],
        status=values["status"] or AttachmentStatus.READY,
        width=values["width"],
        height=values["height"],
        duration_seconds=values["duration_seconds"],
        thumbnails=_thumbnails(values["id"], values["thumbnails"]),
    )


def upload_out(attachment: Attachment, conversation_id: str | None) -> UploadOut:
    values = {column.key: getattr(attachment, column.key) for column in ATTACHMENT_VIEW_COLUMNS}
    return UploadOut(
        **attachment_out(values).model_dump(),
        uploader_id=attachment.uploader_id,
        message_id=attachment.message_id,
        conversation_id=conversation_id,
        codec=attachment.codec,
        failure_reason=attachment.failure_reason,
        created_at=attachment.created_at,
    )
