"""Media tasks, all on the `media` queue. Thin: they take ids, and parley.services does the work
with the storage and media adapters from integrations/.

- parley.process_attachment: process one upload (thumbnails, metadata stripped, probing) and record
  `ready` or `failed`. Started by the media consumer of `attachment.uploaded`.
- parley.delete_attachment_files: remove the stored files of deleted attachments. Started by the
  consumer of `attachment.deleted`.
- parley.purge_unattached_uploads: beat's periodic removal of uploads never attached (and failing
  of uploads whose processing was abandoned).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from integrations.media.processor import PillowAvProcessor
from integrations.storage.configured import storage_for
from parley.services.attachment_processing import (
    fail_abandoned,
    process_upload,
    purge_unattached,
    record_failure,
    remove_files,
)
from parley.services.storage import Storage
from parley.services.uploads import remove_stale_staging, staging_directory
from workers.media_task_names import DELETE_FILES_TASK, MEDIA_QUEUE, PROCESS_TASK, PURGE_TASK
from workers.tasks import DISPATCH_TASK, longest_countdown, retry_delay

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery
    from workers.context import WorkerContext

log = logging.getLogger("parley.workers")

# Storage or database trouble is retried this often (with backoff) before the upload fails.
MAX_ATTEMPTS = 6
PROCESS_SOFT_TIME_LIMIT = 120
PROCESS_TIME_LIMIT = 150
# Staging files older than this were left by an API process that died mid-upload.
STALE_STAGING_SECONDS = 3600.0
# An upload still processing after this long has no task left that will finish it.
ABANDONED_PROCESSING_SECONDS = 900.0

MEDIA_TASK_ROUTES = {name: {"queue": MEDIA_QUEUE} for name in (PROCESS_TASK, DELETE_FILES_TASK, PURGE_TASK)}

_storages: dict[tuple[int, int], Storage] = {}


def media_beat_schedule(max_age_seconds: float) -> dict[str, Any]:
    # Often enough that an upload outlives its maximum age by at most half of it, and that abandoned
    # processing is noticed within minutes.
    every = min(300.0, max(10.0, max_age_seconds / 2))
    return {
        "attachments-purge-unattached": {
            "task": PURGE_TASK,
            "schedule": timedelta(seconds=every),
            "options": {"queue": MEDIA_QUEUE, "expires": every},
        }
    }


def register_media_tasks(app: ParleyCelery) -> None:
    app.task(
        process_attachment,
        name=PROCESS_TASK,
        bind=True,
        shared=False,
        max_retries=None,
        soft_time_limit=PROCESS_SOFT_TIME_LIMIT,
        time_limit=PROCESS_TIME_LIMIT,
    )
    app.task(delete_attachment_files, name=DELETE_FILES_TASK, bind=True, shared=False, max_retries=None)
    app.task(purge_unattached_uploads, name=PURGE_TASK, bind=True, shared=False)


def storage_of(context: WorkerContext) -> Storage:
    # One per process: boto3 clients are not to be shared across the prefork pool's fork.
    key = (id(context), os.getpid())
    if key not in _storages:
        _storages[key] = storage_for(context.settings)
    return _storages[key]


def process_attachment(task: Task, attachment_id: str, *, failures: int = 0) -> str:
    context: WorkerContext = task.app.parley
    fields = {"task_id": task.request.id, "attachment_id": attachment_id}
    started = time.perf_counter()
    try:
        outcome = process_upload(
            context.sessions, storage_of(context), PillowAvProcessor(context.settings.max_image_pixels), attachment_id
        )
    except SoftTimeLimitExceeded:
        outcome = record_failure(context.sessions, attachment_id, "processing took too long")
    except Exception as exc:
        if failures + 1 >= MAX_ATTEMPTS:
            log.error("attachment.gave_up", extra={**fields, "attempts": failures + 1}, exc_info=True)
            return record_failure(context.sessions, attachment_id, f"processing kept failing: {exc!r}")
        countdown = retry_delay(failures, longest_countdown(context.settings))
        log.warning("attachment.retrying", extra={**fields, "countdown": round(countdown, 3), "error": repr(exc)})
        raise task.retry(kwargs={"failures": failures + 1}, countdown=countdown, exc=exc) from exc
    log.info(
        "attachment.processed",
        extra={**fields, "outcome": outcome, "ms": round((time.perf_counter() - started) * 1000, 1)},
    )
    return outcome


def delete_attachment_files(task: Task, attachment_ids: list[str], *, failures: int = 0) -> int:
    context: WorkerContext = task.app.parley
    try:
        remove_files(storage_of(context), attachment_ids)
    except Exception as exc:
        if failures + 1 >= MAX_ATTEMPTS * 2:
            log.error("attachment.files_left", extra={"attachment_ids": attachment_ids}, exc_info=True)
            return 0
        countdown = retry_delay(failures, longest_countdown(context.settings))
        raise task.retry(kwargs={"failures": failures + 1}, countdown=countdown, exc=exc) from exc
    log.info("attachment.files_deleted", extra={"task_id": task.request.id, "attachments": len(attachment_ids)})
    return len(attachment_ids)


def purge_unattached_uploads(task: Task) -> int:
    context: WorkerContext = task.app.parley
    settings = context.settings
    deleted = purge_unattached(context.sessions, settings.unattached_upload_max_age)
    abandoned = fail_abandoned(context.sessions, ABANDONED_PROCESSING_SECONDS)
    remove_stale_staging(staging_directory(settings.storage_path), STALE_STAGING_SECONDS, time.time())
    if abandoned:
        log.warning("attachment.abandoned", extra={"task_id": task.request.id, "attachment_ids": abandoned})
    if deleted or abandoned:
        task.app.send_task(DISPATCH_TASK)  # their events, now rather than at the sweep
        log.info("attachment.purged", extra={"task_id": task.request.id, "attachments": len(deleted)})
    return len(deleted)
