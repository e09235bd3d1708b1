"""The media consumers. A consumer's handler runs inside the transaction that records its receipt
(on SQLite that transaction holds the database's write lock), so these only hand the work to a
media task; the task does the slow part (decoding, storage I/O) outside any transaction.

The task is sent before the receipt commits: if the commit fails, the consumer runs again and sends
it again, and the tasks are idempotent, so the work happens at least once and is never lost.
"""

from __future__ import annotations

from celery import current_task
from sqlalchemy.orm import Session

from parley.events import EventType
from parley.outbox.consumers import Consumer, EventDelivery, WorkKind
from workers.media_task_names import DELETE_FILES_TASK, MEDIA_QUEUE, PROCESS_TASK, PROCESSING_PRIORITY


def _send(task_name: str, *args: object, priority: int = 0) -> None:
    running = current_task
    if running is None:
        raise RuntimeError("media consumers run inside a Celery task (parley.consume_event)")
    running.app.send_task(task_name, args=args, queue=MEDIA_QUEUE, priority=priority)


def start_processing(session: Session, delivery: EventDelivery) -> None:
    _send(PROCESS_TASK, delivery.payload["attachment"]["id"], priority=PROCESSING_PRIORITY)


def remove_deleted_files(session: Session, delivery: EventDelivery) -> None:
    _send(DELETE_FILES_TASK, list(delivery.payload["attachment_ids"]))


MEDIA_CONSUMERS: tuple[Consumer, ...] = (
    Consumer(
        name="media.process",
        event_types=frozenset({EventType.ATTACHMENT_UPLOADED}),
        handle=start_processing,
        kind=WorkKind.MEDIA,
    ),
    Consumer(
        name="media.delete_files",
        event_types=frozenset({EventType.ATTACHMENT_DELETED}),
        handle=remove_deleted_files,
        kind=WorkKind.MEDIA,
    ),
)
