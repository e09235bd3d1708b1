"""Uploaded attachments: accepting an upload, attaching uploads to a message, who may see them,
and removing the ones a message no longer has or that were never used.

Services get their storage as an argument (parley.services.storage.Storage) and call it through
asyncio.to_thread: adapters are synchronous (boto3 is), and the API's event loop must not wait on
a disk or an S3 round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.db import write_transaction
from parley.errors import Invalid, NotFound, NotReady, UnsupportedMedia
from parley.events import AttachmentsDeleted, AttachmentUploaded, EventType
from parley.ids import is_valid_id, new_id
from parley.models import Attachment, AttachmentKind, AttachmentStatus, Conversation, Message, User, utcnow
from parley.schemas import AttachmentOut, UploadOut
from parley.services.attachment_views import ATTACHMENT_VIEW_COLUMNS, attachment_out, content_url, upload_out
from parley.services.outbox import record_event
from parley.services.storage import (
    ORIGINAL,
    Location,
    Storage,
    StorageUnavailable,
    attachment_key,
    attachment_prefix,
)
from parley.services.uploads import UploadStaging, sanitize_name


@dataclass(frozen=True)
class SniffedType:
    """What an upload's bytes are, found from its content alone by integrations.media."""

    content_type: str
    kind: AttachmentKind | None  # None: refused (executables and the like)
    extension: str  # ".png": for a name the upload did not give
    label: str  # "PNG image", "ELF executable": for messages


async def accept_upload(
    session: AsyncSession,
    storage: Storage,
    uploader: User,
    staged: UploadStaging,
    sniffed: SniffedType,
    raw_name: str | None,
) -> UploadOut:
    """Store a fully received upload and record it (`processing`, and `attachment.uploaded` for the
    media worker). A refused type leaves nothing behind: the staged file is always removed."""
    try:
        if sniffed.kind is None:
            raise UnsupportedMedia(f"{sniffed.label} files cannot be uploaded", details={"detected": sniffed.label})
        if staged.size == 0:
            raise Invalid("the file is empty", details={"fields": [{"field": "file", "message": "must not be empty"}]})
        attachment_id = new_id()
        key = attachment_key(attachment_id, ORIGINAL)
        await asyncio.to_thread(storage.store_file, key, staged.path, sniffed.content_type)
        try:
            async with write_transaction(session):
                attachment = Attachment(
                    id=attachment_id,
                    message_id=None,
                    name=sanitize_name(raw_name, sniffed.extension),
                    url=content_url(attachment_id),
                    kind=sniffed.kind,
                    content_type=sniffed.content_type,
                    size=staged.size,
                    uploader_id=uploader.id,
                    status=AttachmentStatus.PROCESSING,
                    storage_key=key,
                    created_at=utcnow(),
                )
                session.add(attachment)
                await session.flush()
                view = upload_out(attachment, None)
                await record_event(
                    session, EventType.ATTACHMENT_UPLOADED, AttachmentUploaded(attachment=view), conversation_id=None
                )
        except BaseException:
            # No row, so no stored file either. Should storage fail here too, the first error is the
            # one to report; the stray file is then only unreachable (no row names it).
            with contextlib.suppress(StorageUnavailable):
                await asyncio.to_thread(storage.delete_prefix, attachment_prefix(attachment_id))
            raise
        return view
    finally:
        await asyncio.to_thread(staged.discard)


def not_usable(attachment_id: str, reason: str) -> Invalid:
    return Invalid(
        f"attachment {attachment_id} cannot be attached: {reason}",
        code="attachment_not_usable",
        details={"attachment_id": attachment_id, "reason": reason},
    )


async def claim_uploads(
    session: AsyncSession, sender: User, message_id: str, attachment_ids: Sequence[str]
) -> list[AttachmentOut]:
    """In the sending transaction: attach uploads the sender owns and has not used yet (processing or
    ready; a failed one shows nothing). Anything else fails the send, naming the id."""
    seen: set[str] = set()
    for attachment_id in attachment_ids:
        if attachment_id in seen:
            raise not_usable(attachment_id, "given twice")
        seen.add(attachment_id)
        if not is_valid_id(attachment_id):
            raise not_usable(attachment_id, "no such upload of yours")
    if not attachment_ids:
        return []
    claimed = set(
        (
            await session.execute(
                update(Attachment)
                .where(
                    Attachment.id.in_(attachment_ids),
                    Attachment.uploader_id == sender.id,
                    Attachment.message_id.is_(None),
                    Attachment.status != AttachmentStatus.FAILED,
                )
                .values(message_id=message_id)
                .returning(Attachment.id)
                .execution_options(synchronize_session=False)
            )
        ).scalars()
    )
    for attachment_id in attachment_ids:
        if attachment_id not in claimed:
            raise not_usable(attachment_id, await _why_not_usable(session, sender, attachment_id))
    rows = await session.execute(select(*ATTACHMENT_VIEW_COLUMNS).where(Attachment.id.in_(attachment_ids)))
    return [attachment_out(row._mapping) for row in rows]


async def _why_not_usable(session: AsyncSession, sender: User, attachment_id: str) -> str:
    row = (
        await session.execute(
            select(Attachment.uploader_id, Attachment.message_id, Attachment.status).where(
                Attachment.id == attachment_id
            )
        )
    ).first()
    if row is None or row.uploader_id != sender.id:
        return "no such upload of yours"  # someone else's upload is not revealed
    if row.status == AttachmentStatus.FAILED:
        return "its processing failed"
    return "already attached to a message"


async def _visible(session: AsyncSession, viewer: User, attachment_id: str) -> tuple[Attachment, str | None]:
    """The attachment and its conversation, if `viewer` may see it: its uploader before it is sent,
    the conversation's members after. Anyone else learns nothing: 404."""
    not_found = NotFound("no such attachment", details={"attachment_id": attachment_id})
    if not is_valid_id(attachment_id):
        raise not_found
    row = (
        await session.execute(
            select(Attachment, Conversation)
            .outerjoin(Message, Message.id == Attachment.message_id)
            .outerjoin(Conversation, Conversation.id == Message.conversation_id)
            .where(Attachment.id == attachment_id)
        )
    ).first()
    if row is None:
        raise not_found
    attachment, conversation = row
    if attachment.message_id is None:
        if attachment.uploader_id != viewer.id:
            raise not_found
        return attachment, None
    if conversation is None or not conversation.has_member(viewer.id):
        raise not_found
    return attachment, conversation.id


async def show_attachment(session: AsyncSession, viewer: User, attachment_id: str) -> UploadOut:
    async with session.begin():
        attachment, conversation_id = await _visible(session, viewer, attachment_id)
        return upload_out(attachment, conversation_id)


def content_disposition(name: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback `filename` and the exact name as UTF-8 `filename*`."""
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%;' else "_" for ch in name) or "file"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@dataclass(frozen=True)
class Serving:
    location: Location
    content_type: str
    disposition: str


def _ready_upload(attachment: Attachment) -> None:
    if attachment.storage_key is None:
        raise NotFound("this attachment is a link, not a stored file", details={"attachment_id": attachment.id})
    if attachment.status != AttachmentStatus.READY:
        # An image's original may carry GPS data until processing has stripped it: nothing is served
        # before then.
        raise NotReady(
            f"the attachment is {attachment.status.value}",
            code="attachment_not_ready",
            details={"attachment_id": attachment.id, "status": attachment.status.value},
        )


async def serve_content(session: AsyncSession, storage: Storage, viewer: User, attachment_id: str) -> Serving:
    async with session.begin():
        attachment, _ = await _visible(session, viewer, attachment_id)
    _ready_upload(attachment)
    assert attachment.storage_key is not None
    # Images and videos show inline; documents download, so a stored HTML or PDF never runs as a page
    # of Parley's origin.
    inline = attachment.kind in (AttachmentKind.IMAGE, AttachmentKind.VIDEO)
    disposition = content_disposition(attachment.name, inline=inline)
    location = await asyncio.to_thread(
        storage.locate, attachment.storage_key, content_type=attachment.content_type, disposition=disposition
    )
    return Serving(location, attachment.content_type, disposition)


async def serve_thumbnail(
    session: AsyncSession, storage: Storage, viewer: User, attachment_id: str, size: int
) -> Serving:
    """The smallest thumbnail at least `size` on its long side (else the largest there is)."""
    async with session.begin():
        attachment, _ = await _visible(session, viewer, attachment_id)
    _ready_upload(attachment)
    thumbnails = sorted(attachment.thumbnails or [], key=lambda t: t["size"])
    if not thumbnails:
        raise NotFound(
            "this attachment has no thumbnail", code="no_thumbnail", details={"attachment_id": attachment_id}
        )
    chosen = next((t for t in thumbnails if t["size"] >= size), thumbnails[-1])
    stem = attachment.name.rsplit(".", 1)[0] if "." in attachment.name else attachment.name
    extension = ".png" if chosen["content_type"] == "image/png" else ".jpg"
    disposition = content_disposition(f"{stem}-{chosen['size']}{extension}", inline=True)
    location = await asyncio.to_thread(
        storage.locate, chosen["key"], content_type=chosen["content_type"], disposition=disposition
    )
    return Serving(location, chosen["content_type"], disposition)


async def forget_message_uploads(session: AsyncSession, message: Message) -> None:
    """In the deleting transaction: drop the message's attachment rows, and record
    `attachment.deleted` for the uploaded ones so a worker removes their files after commit."""
    stored = list(
        (
            await session.execute(
                delete(Attachment)
                .where(Attachment.message_id == message.id)
                .returning(Attachment.id, Attachment.storage_key)
                .execution_options(synchronize_session=False)
            )
        ).all()
    )
    uploaded = sorted(row.id for row in stored if row.storage_key is not None)
    if uploaded:
        await record_event(
            session,
            EventType.ATTACHMENT_DELETED,
            AttachmentsDeleted(attachment_ids=uploaded, message_id=message.id),
            conversation_id=message.conversation_id,
        )
