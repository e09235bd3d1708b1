"""Uploaded attachments: accepting an upload, attaching uploads to a message, who may see them,
and removing the ones a message no longer has or that were never used.

These functions only read and write rows; the storage I/O around them (storing an upload's
bytes, locating a file to serve) is done by the caller, which in the API runs it in a thread so the
event loop never waits on a disk or an S3 round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from parley.db import reading, transaction
from parley.errors import Invalid, NotFound, NotReady, UnsupportedMedia
from parley.events import AttachmentsDeleted, AttachmentUploaded, EventType
from parley.ids import is_valid_id, new_id
from parley.models import Attachment, AttachmentKind, AttachmentStatus, Conversation, Message, User, utcnow
from parley.schemas import AttachmentOut, UploadOut
from parley.services.attachment_views import ATTACHMENT_VIEW_COLUMNS, attachment_out, content_url, upload_out
from parley.services.outbox import record_event
from parley.services.storage import (
    ORIGINAL,
    attachment_key,
)
from parley.services.uploads import sanitize_name


@dataclass(frozen=True)
class SniffedType:
    """What an upload's bytes are, found from its content alone by integrations.media."""

    content_type: str
    kind: AttachmentKind | None  # None: refused (executables and the like)
    extension: str  # ".png": for a name the upload did not give
    label: str  # "PNG image", "ELF executable": for messages


def check_upload(sniffed: SniffedType, size: int) -> None:
    """Refused types (executables and the like) and empty files are not stored at all."""
    if sniffed.kind is None:
        raise UnsupportedMedia(f"{sniffed.label} files cannot be uploaded", details={"detected": sniffed.label})
    if size == 0:
        raise Invalid("the file is empty", details={"fields": [{"field": "file", "message": "must not be empty"}]})


def new_upload_key() -> tuple[str, str]:
    """(attachment id, storage key) for an upload about to be stored."""
    attachment_id = new_id()
    return attachment_id, attachment_key(attachment_id, ORIGINAL)


def record_upload(
    session: Session, uploader: User, attachment_id: str, key: str, sniffed: SniffedType, size: int, raw_name: str | None
) -> UploadOut:
    """Record an upload whose bytes are stored under `key`: `processing`, and `attachment.uploaded`
    (to its uploader) for the media worker."""
    check_upload(sniffed, size)
    assert sniffed.kind is not None
    with transaction(session):
        attachment = Attachment(
            id=attachment_id,
            message_id=None,
            name=sanitize_name(raw_name, sniffed.extension),
            url=content_url(attachment_id),
            kind=sniffed.kind,
            content_type=sniffed.content_type,
            size=size,
            uploader_id=uploader.id,
            status=AttachmentStatus.PROCESSING,
            storage_key=key,
            created_at=utcnow(),
        )
        session.add(attachment)
        session.flush()
        view = upload_out(attachment, None)
        record_event(
            session,
            EventType.ATTACHMENT_UPLOADED,
            AttachmentUploaded(attachment=view),
            conversation_id=None,
            audience=[uploader.id],
        )
    return view


def not_usable(attachment_id: str, reason: str) -> Invalid:
    return Invalid(
        f"attachment {attachment_id} cannot be attached: {reason}",
        code="attachment_not_usable",
        details={"attachment_id": attachment_id, "reason": reason},
    )


def claim_uploads(
    session: Session, sender: User, message_id: str, attachment_ids: Sequence[str]
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
            session.execute(
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
            raise not_usable(attachment_id, _why_not_usable(session, sender, attachment_id))
    rows = session.execute(select(*ATTACHMENT_VIEW_COLUMNS).where(Attachment.id.in_(attachment_ids)))
    return [attachment_out(row._mapping) for row in rows]


def _why_not_usable(session: Session, sender: User, attachment_id: str) -> str:
    row = (
        session.execute(
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


def _visible(session: Session, viewer: User, attachment_id: str) -> tuple[Attachment, str | None]:
    """The attachment and its conversation, if `viewer` may see it: its uploader before it is sent,
    the conversation's members after. Anyone else learns nothing: 404."""
    not_found = NotFound("no such attachment", details={"attachment_id": attachment_id})
    if not is_valid_id(attachment_id):
        raise not_found
    row = (
        session.execute(
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


def show_attachment(session: Session, viewer: User, attachment_id: str) -> UploadOut:
    with reading(session):
        attachment, conversation_id = _visible(session, viewer, attachment_id)
        return upload_out(attachment, conversation_id)


def content_disposition(name: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback `filename` and the exact name as UTF-8 `filename*`."""
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%;' else "_" for ch in name) or "file"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@dataclass(frozen=True)
class Serving:
    """What to serve: the caller locates `key` in storage (a local file or a presigned URL)."""

    key: str
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


def serve_content(session: Session, viewer: User, attachment_id: str) -> Serving:
    with reading(session):
        attachment, _ = _visible(session, viewer, attachment_id)
    _ready_upload(attachment)
    assert attachment.storage_key is not None
    # Images and videos show inline; documents download, so a stored HTML or PDF never runs as a page
    # of Parley's origin.
    inline = attachment.kind in (AttachmentKind.IMAGE, AttachmentKind.VIDEO)
    disposition = content_disposition(attachment.name, inline=inline)
    return Serving(attachment.storage_key, attachment.content_type, disposition)


def serve_thumbnail(session: Session, viewer: User, attachment_id: str, size: int) -> Serving:
    """The smallest thumbnail at least `size` on its long side (else the largest there is)."""
    with reading(session):
        attachment, _ = _visible(session, viewer, attachment_id)
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
    return Serving(chosen["key"], chosen["content_type"], disposition)


def forget_message_uploads(session: Session, message: Message) -> None:
    """In the deleting transaction: drop the message's attachment rows, and record
    `attachment.deleted` for the uploaded ones so a worker removes their files after commit."""
    stored = list(
        (
            session.execute(
                delete(Attachment)
                .where(Attachment.message_id == message.id)
                .returning(Attachment.id, Attachment.storage_key)
                .execution_options(synchronize_session=False)
            )
        ).all()
    )
    uploaded = sorted(row.id for row in stored if row.storage_key is not None)
    if uploaded:
        record_event(
            session,
            EventType.ATTACHMENT_DELETED,
            AttachmentsDeleted(attachment_ids=uploaded, message_id=message.id),
            conversation_id=message.conversation_id,
            audience=[message.sender_id],  # the files' uploader (the sender): internal bookkeeping
        )
