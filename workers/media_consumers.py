"""The media consumers. They follow the one consumer pattern (parley.outbox.consumers): the handler
only reads rows inside the receipt transaction (the upload's row, already `processing`, is the
durable record of the work to do), and `after_commit` hands the slow part (decoding, storage I/O)
to a media task once the receipt has committed.

Between that commit and the send lies a crash window: an upload whose task was lost stays
`processing`, and beat's media sweep marks it failed after PARLEY's processing deadline, with that
reason, rather than leave it hanging.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import current_task
from sqlalchemy.orm import Session

from parley.events import AttachmentsDeleted, AttachmentUploaded, EventType
from parley.outbox.consumers import Consumer, EventDelivery, WorkKind
from workers.media_task_names import DELETE_FILES_TASK, MEDIA_QUEUE, PROCESS_TASK, PROCESSING_PRIORITY


def _take(session: Session, delivery: EventDelivery) -> None:
    """Nothing to write: the upload's own row already says what is to be done."""


def _send(task_name: str, *args: object, priority: int = 0) -> None:
    running = current_task
    if not running:
        raise RuntimeError("media consumers run inside a Celery task (parley.consume_events)")
    running.app.send_task(task_name, args=args, queue=MEDIA_QUEUE, priority=priority)


def start_processing(deliveries: Sequence[EventDelivery]) -> None:
    for delivery in deliveries:
        uploaded = delivery.data
        assert isinstance(uploaded, AttachmentUploaded)
        _send(PROCESS_TASK, uploaded.attachment.id, priority=PROCESSING_PRIORITY)


def remove_deleted_files(deliveries: Sequence[EventDelivery]) -> None:
    for delivery in deliveries:
        deleted = delivery.data
        assert isinstance(deleted, AttachmentsDeleted)
        _send(DELETE_FILES_TASK, list(deleted.attachment_ids))


MEDIA_CONSUMERS: tuple[Consumer, ...] = (
    Consumer(
        name="media.process",
        event_types=frozenset({EventType.ATTACHMENT_UPLOADED}),
        handle=_take,
        after_commit=start_processing,
        kind=WorkKind.MEDIA,
    ),
    Consumer(
        name="media.delete_files",
        event_types=frozenset({EventType.ATTACHMENT_DELETED}),
        handle=_take,
        after_commit=remove_deleted_files,
        kind=WorkKind.MEDIA,
    ),
)
