"""The Celery app, configured from Parley's Settings.

`create_celery_app(settings)` builds a fresh app (the API's nudger and the tests use it with their
own settings); workers/app.py holds the process-wide one that `parley worker`, `parley beat` and
`celery -A workers.app` run.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from parley.config import Settings
from parley.logs import configure_logging
from workers.broker import REDIS_SCHEMES, broker_config
from workers.context import WorkerContext
from workers.media_tasks import MEDIA_TASK_ROUTES, media_beat_schedule, register_media_tasks
from workers.queues import DEFAULT_QUEUE, QUEUES
from workers.tasks import DISPATCH_TASK, DISPATCH_TIME_LIMIT, register_tasks
from workers.digest_tasks import DIGEST_TASK_ROUTES, register_digest_tasks
from workers.email_tasks import EMAIL_TASK_ROUTES, register_email_tasks
from workers.moderation_tasks import moderation_beat_schedule, register_moderation_tasks
from workers.webhook_tasks import register_webhook_tasks

log = logging.getLogger("parley.workers")

# Ceiling for any task sent without limits of its own.
DEFAULT_SOFT_TIME_LIMIT = 300
DEFAULT_TIME_LIMIT = 360


class ParleyCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries Parley's per-process worker state."""

    parley: WorkerContext


def create_celery_app(settings: Settings) -> ParleyCelery:
    app = ParleyCelery("parley", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.parley = WorkerContext(settings, wake_dispatcher=lambda: _wake_dispatcher(app))
    register_tasks(app)
    register_media_tasks(app)
    register_webhook_tasks(app)
    register_email_tasks(app)
    register_moderation_tasks(app)
    register_digest_tasks(app)
    return app


def _wake_dispatcher(app: ParleyCelery) -> None:
    try:
        app.send_task(DISPATCH_TASK, queue=DEFAULT_QUEUE, expires=60, retry=False)
    except Exception as exc:  # the sweep dispatches what a lost wake-up leaves
        log.warning("outbox.nudge_failed", extra={"error": repr(exc)})


def celery_config(settings: Settings) -> dict[str, Any]:
    sweep = settings.outbox_sweep_seconds
    return {
        **broker_config(settings),
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle from the broker would run arbitrary code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # tasks record their outcome in the database (receipts)
        "task_queues": QUEUES,
        "task_default_queue": DEFAULT_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {DISPATCH_TASK: {"queue": DEFAULT_QUEUE}, **MEDIA_TASK_ROUTES, **EMAIL_TASK_ROUTES,
                        **DIGEST_TASK_ROUTES},
        # A task is acknowledged when it has finished, and given back to the broker when its
        # worker process dies, so a crash mid-task means the task runs again, never that it is lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # On a broker connection loss, let running tasks finish: their database effect and receipt
        # commit, and the redelivered copy is a no-op. Cancelling them instead would lose them
        # outright if the broker came back without its data.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Each worker process takes one task at a time: a slow task never sits on prefetched ones
        # that another, idle process could run.
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": DEFAULT_SOFT_TIME_LIMIT,
        "task_time_limit": DEFAULT_TIME_LIMIT,
        # A failed dispatch publish is retried briefly; after that the sweep takes over.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            "outbox-sweep": {
                "task": DISPATCH_TASK,
                "schedule": timedelta(seconds=sweep),
                "kwargs": {"sweep": True},  # also re-dispatches work that left no receipt
                # Sweeps that queued up while no worker ran are worthless once the next one is due.
                "options": {"queue": DEFAULT_QUEUE, "expires": max(2 * sweep, 10.0)},
            },
            **media_beat_schedule(settings.unattached_upload_max_age),
            **moderation_beat_schedule(),
        },
        # The schedule is static and a missed sweep costs nothing, so beat keeps its state in memory:
        # no schedule file to share, lock or corrupt.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_max_loop_interval": min(sweep, 5.0),
    }


def check_limits(app: ParleyCelery) -> None:
    """Load the consumers (a missing module or a bad consumer fails here, at start-up) and warn when
    Redis would hand a still-running task to a second worker. Countdowns need no check: every one
    is capped below the visibility timeout (tasks.longest_countdown)."""
    registry = app.parley.registry
    settings = app.parley.settings
    if not settings.broker_url.startswith(REDIS_SCHEMES):
        return
    longest_run = max([DISPATCH_TIME_LIMIT, *(c.time_limit for c in registry)])
    if settings.broker_visibility_timeout <= longest_run:
        log.warning(
            "workers.visibility_timeout_short",
            extra={"visibility_timeout": settings.broker_visibility_timeout, "longest_time_limit": longest_run},
        )


@setup_logging.connect
def _structured_logs(loglevel: int | str | None = None, **_: Any) -> None:
    # Connecting here stops Celery from installing its own log format: worker and beat log JSON
    # lines like the API.
    configure_logging(logging.getLevelName(loglevel) if isinstance(loglevel, int) else (loglevel or "INFO"))
