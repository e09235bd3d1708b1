"""Processing an upload on a media worker, and removing stored files.

Processing reads the upload and writes its derived files (a cleaned copy, thumbnails) outside any
database transaction, then records the outcome and its event in one short transaction: media work
never holds a database lock (on SQLite, the whole database's). Every step is idempotent, because a
task runs again after a worker crash: derived files have fixed keys and are overwritten, and the
outcome is recorded only while the upload is still `processing`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from parley.db import transaction
from parley.events import AttachmentProcessed, AttachmentsDeleted, EventType
from parley.models import Attachment, AttachmentKind, AttachmentStatus, Conversation, Message, utcnow
from parley.services.attachment_views import upload_out
from parley.services.outbox import record_event
from parley.services.storage import (
    CONTENT,
    Storage,
    StoredObjectMissing,
    attachment_key,
    attachment_prefix,
    thumbnail_key,
)

MAX_REASON_CHARS = 500
PURGE_BATCH = 500


@dataclass(frozen=True)
class Rendition:
    """A file made from an upload: its cleaned copy or a thumbnail. Small ones are bytes; large
    ones (a remuxed video) a file in the job's work directory."""

    data: bytes
    content_type: str
    width: int
    height: int
    path: Path | None = None


@dataclass(frozen=True)
class MediaFacts:
    """What processing found. `content` replaces the served bytes (images: metadata stripped);
    `thumbnails` maps a long-side size (320, 1280) to its rendition."""

    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    codec: str | None = None
    content: Rendition | None = None
    thumbnails: dict[int, Rendition] = field(default_factory=dict)


class MediaRejected(Exception):
    """The file cannot be processed (corrupt, truncated, a decompression bomb): the upload fails
    with this reason. Not retried: it would fail the same way again."""


class MediaProcessor(Protocol):
    def image(self, path: Path) -> MediaFacts: ...

    def video(self, path: Path, content_type: str, workdir: Path) -> MediaFacts:
        """`workdir` is the job's own scratch folder, removed when the job ends."""


@dataclass(frozen=True)
class Job:
    attachment_id: str
    kind: AttachmentKind
    content_type: str
    storage_key: str


def pending_job(sessions: sessionmaker[Session], attachment_id: str) -> Job | None:
    """The upload's processing job, or None if it is gone or already finished."""
    with sessions() as session, session.begin():
        attachment = session.get(Attachment, attachment_id)
        if attachment is None or attachment.status != AttachmentStatus.PROCESSING or attachment.storage_key is None:
            return None
        return Job(attachment.id, attachment.kind, attachment.content_type, attachment.storage_key)


def process_upload(
    sessions: sessionmaker[Session], storage: Storage, processor: MediaProcessor, attachment_id: str
) -> str:
    """Process one upload and record `ready` or `failed`. Returns what happened (for the log).
    Storage and database errors propagate: the task retries them."""
    job = pending_job(sessions, attachment_id)
    if job is None:
        return "not_pending"
    with tempfile.TemporaryDirectory(prefix="parley-media-") as workdir:
        try:
            facts = _examine(storage, processor, job, Path(workdir))
        except MediaRejected as exc:
            return record_failure(sessions, attachment_id, str(exc))
        except StoredObjectMissing:
            if pending_job(sessions, attachment_id) is None:
                return "not_pending"  # deleted, or another run finished it (and removed the original)
            return record_failure(sessions, attachment_id, "the uploaded file is missing from storage")
        served_key = job.storage_key
        served_size: int | None = None
        if facts.content is not None:
            content = facts.content
            served_size = content.path.stat().st_size if content.path is not None else len(content.data)
            served_key = attachment_key(attachment_id, CONTENT)
            _store(storage, served_key, content)  # may move content.path away
        thumbnails = []
        for size, rendition in sorted(facts.thumbnails.items()):
            key = thumbnail_key(attachment_id, size)
            _store(storage, key, rendition)
            thumbnails.append(
                {
                    "size": size,
                    "key": key,
                    "width": rendition.width,
                    "height": rendition.height,
                    "content_type": rendition.content_type,
                }
            )
    outcome = _record(
        sessions, attachment_id, AttachmentStatus.READY, facts, served_key, thumbnails, None, served_size=served_size
    )
    if outcome == "gone":
        # Deleted while we worked: what we just stored belongs to nobody.
        storage.delete_prefix(attachment_prefix(attachment_id))
    elif outcome == "ready" and served_key != job.storage_key:
        # The original may hold GPS coordinates; only the cleaned copy stays.
        storage.delete(job.storage_key)
    return outcome


def _store(storage: Storage, key: str, rendition: Rendition) -> None:
    if rendition.path is not None:
        storage.store_file(key, rendition.path, rendition.content_type)
    else:
        storage.store_bytes(key, rendition.data, rendition.content_type)


def _examine(storage: Storage, processor: MediaProcessor, job: Job, workdir: Path) -> MediaFacts:
    if job.kind is AttachmentKind.DOCUMENT:
        return MediaFacts()  # documents are stored as they are
    with storage.local_copy(job.storage_key) as path:
        if job.kind is AttachmentKind.IMAGE:
            return processor.image(path)
        return processor.video(path, job.content_type, workdir)


def fail_abandoned(sessions: sessionmaker[Session], older_than_seconds: float) -> list[str]:
    """Uploads still `processing` long after any task could have finished (the task was lost, or
    its worker was killed at the hard time limit) end as `failed`, never stuck. Their ids."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    with sessions() as session:
        stuck = list(
            session.scalars(
                select(Attachment.id)
                .where(Attachment.status == AttachmentStatus.PROCESSING, Attachment.created_at < cutoff)
                .limit(PURGE_BATCH)
            )
        )
    reason = "processing did not finish (the file may crash or hang the media worker)"
    return [attachment_id for attachment_id in stuck if record_failure(sessions, attachment_id, reason) == "failed"]


def record_failure(sessions: sessionmaker[Session], attachment_id: str, reason: str) -> str:
    return _record(sessions, attachment_id, AttachmentStatus.FAILED, MediaFacts(), None, [], reason)


def _record(
    sessions: sessionmaker[Session],
    attachment_id: str,
    status: AttachmentStatus,
    facts: MediaFacts,
    served_key: str | None,
    thumbnails: list[dict[str, object]],
    reason: str | None,
    *,
    served_size: int | None = None,
) -> str:
    """`served_size`: the byte size of the cleaned copy that replaced the upload, if one did."""
    with sessions() as session, transaction(session):
        attachment = session.scalar(select(Attachment).where(Attachment.id == attachment_id).with_for_update())
        if attachment is None:
            return "gone"
        if attachment.status != AttachmentStatus.PROCESSING:
            return "not_pending"
        attachment.status = status
        attachment.processed_at = utcnow()
        if status is AttachmentStatus.READY:
            attachment.width, attachment.height = facts.width, facts.height
            attachment.duration_seconds, attachment.codec = facts.duration_seconds, facts.codec
            attachment.thumbnails = thumbnails or None
            attachment.storage_key = served_key
            if served_size is not None and facts.content is not None:
                # The metadata describes what /content serves: the cleaned copy, not the upload.
                attachment.size, attachment.content_type = served_size, facts.content.content_type
        else:
            attachment.failure_reason = (reason or "processing failed")[:MAX_REASON_CHARS]
        session.flush()
        conversation = (
            session.execute(
                select(Conversation.id, Conversation.initiator_id, Conversation.recipient_id)
                .join(Message, Message.conversation_id == Conversation.id)
                .where(Message.id == attachment.message_id)
            ).first()
            if attachment.message_id is not None
            else None
        )
        event = EventType.ATTACHMENT_READY if status is AttachmentStatus.READY else EventType.ATTACHMENT_FAILED
        conversation_id = conversation.id if conversation is not None else None
        payload = AttachmentProcessed(attachment=upload_out(attachment, conversation_id))
        # Sent: the conversation's members hear of it. Not sent yet: its uploader alone.
        audience = [conversation.initiator_id, conversation.recipient_id] if conversation else [attachment.uploader_id]
        record_event(session, event, payload, conversation_id=conversation_id, audience=audience)
        return status.value


def remove_files(storage: Storage, attachment_ids: list[str]) -> None:
    """Remove every stored file of these (deleted) attachments: the upload, its cleaned copy,
    thumbnails. Removing what is already gone is fine, so a retry is harmless."""
    for attachment_id in attachment_ids:
        storage.delete_prefix(attachment_prefix(attachment_id))


def purge_unattached(sessions: sessionmaker[Session], max_age_seconds: float) -> list[str]:
    """Delete up to PURGE_BATCH uploads never attached within `max_age_seconds`; their files follow
    through `attachment.deleted`. A send attaching one at the same moment wins or loses cleanly:
    the delete re-checks `message_id IS NULL` under the row's lock."""
    cutoff = utcnow() - timedelta(seconds=max_age_seconds)
    with sessions() as session, transaction(session):
        candidates = list(
            session.scalars(
                select(Attachment.id)
                .where(Attachment.message_id.is_(None), Attachment.created_at < cutoff)
                .order_by(Attachment.created_at)
                .limit(PURGE_BATCH)
            )
        )
        if not candidates:
            return []
        rows = session.execute(
            delete(Attachment)
            .where(Attachment.id.in_(candidates), Attachment.message_id.is_(None))
            .returning(Attachment.id, Attachment.uploader_id)
            .execution_options(synchronize_session=False)
        ).all()
        deleted = sorted(row.id for row in rows)
        if deleted:
            record_event(
                session,
                EventType.ATTACHMENT_DELETED,
                AttachmentsDeleted(attachment_ids=deleted),
                conversation_id=None,
                audience=[row.uploader_id for row in rows if row.uploader_id is not None],
            )
    return deleted
