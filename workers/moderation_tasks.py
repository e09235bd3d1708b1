"""Beat's safety housekeeping: the purge of deleted messages' text kept for moderators
(PARLEY_RETAIN_DELETED_DAYS, parley.purge_deleted_content, hourly) and the look for relationships
that expired (parley.announce_expired_relationships, every minute), on the default queue."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Task

from parley.services.moderation import purge_retained
from parley.services.policy import announce_expired_relationships
from workers.queues import DEFAULT_QUEUE
from workers.task_names import PURGE_DELETED_TASK, RELATIONSHIP_EXPIRY_TASK

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery
    from workers.context import WorkerContext

log = logging.getLogger("parley.workers")
PURGE_EVERY_SECONDS = 3600.0
EXPIRY_EVERY_SECONDS = 60.0


def moderation_beat_schedule() -> dict[str, Any]:
    return {
        "messages-purge-deleted-content": {
            "task": PURGE_DELETED_TASK,
            "schedule": timedelta(seconds=PURGE_EVERY_SECONDS),
            "options": {"queue": DEFAULT_QUEUE, "expires": PURGE_EVERY_SECONDS},
        },
        "relationships-announce-expired": {
            "task": RELATIONSHIP_EXPIRY_TASK,
            "schedule": timedelta(seconds=EXPIRY_EVERY_SECONDS),
            "options": {"queue": DEFAULT_QUEUE, "expires": EXPIRY_EVERY_SECONDS},
        },
    }


def register_moderation_tasks(app: ParleyCelery) -> None:
    app.task(purge_deleted_content, name=PURGE_DELETED_TASK, bind=True, shared=False)
    app.task(announce_expired, name=RELATIONSHIP_EXPIRY_TASK, bind=True, shared=False)


def announce_expired(task: Task) -> int:
    context: WorkerContext = task.app.parley
    if context.settings.conversation_policy != "relationships":
        return 0
    with context.sessions() as session:
        found = announce_expired_relationships(session, context.settings)
    if found:
        log.info("relationship.expired", extra={"task_id": task.request.id, "relationships": found})
    return found


def purge_deleted_content(task: Task) -> int:
    context: WorkerContext = task.app.parley
    with context.sessions() as session:
        purged = purge_retained(session, context.settings)
    if purged:
        log.info("message.retained_content_purged", extra={"task_id": task.request.id, "messages": purged})
    return purged
