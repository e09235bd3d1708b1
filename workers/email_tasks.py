"""Email on Celery: the notifier consumer, the window task, the send task and the sweep. Thin: the
rules are in parley.services.email_notifications, composing and SMTP in integrations/email/.

- consumer `email.notify` (queue `email`, message.created): in the receipt transaction, opens the
  recipient's batching window for the conversation (email_threads.due_at). After that commits,
  sends `parley.email_notify_due` to run when the window ends.
- task `parley.email_notify_due`: for every thread whose window has ended, checks whether the user
  is connected (a live WebSocket: Redis presence with PARLEY_REDIS_URL; without Redis, the API's
  presence lives in its own process and no worker can see it, so a user counts as not connected
  and only reading the messages prevents the email), then records at most one email listing the
  unread messages, and sends `parley.send_email` for it.
- task `parley.send_email`: claims the email (a lease: one sender at a time, never once sent),
  hands it to the EmailSender; connection errors and 4xx answers are retried with backoff up to
  PARLEY_EMAIL_SEND_MAX_ATTEMPTS, a 5xx answer fails it (logged `email.failed`).
- task `parley.email_sweep` (beat, every PARLEY_OUTBOX_SWEEP_SECONDS): the windows and sends that a
  lost task left behind.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import redis
from celery import Task, current_task
from sqlalchemy.orm import Session

from integrations.email.notifications import compose_notification
from integrations.email.sender import EmailSender, PermanentFailure, send_all, sender_for
from parley.config import Settings, get_settings
from parley.events import EventType, MessageCreated
from parley.models import utcnow
from parley.outbox.consumers import Consumer, EventDelivery, WorkKind
from parley.realtime.presence_store import CONNECTIONS
from parley.services.email_notifications import (
    NotificationFacts,
    claim_emails,
    due_emails,
    due_threads,
    note_message_created,
    prepare_notification,
    record_failed,
    record_retry,
    record_sent_many,
)

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery
    from workers.context import WorkerContext

log = logging.getLogger("parley.email")

NOTIFY_DUE_TASK = "parley.email_notify_due"
SEND_TASK = "parley.send_email"
SWEEP_TASK = "parley.email_sweep"
EMAIL_QUEUE = WorkKind.EMAIL.value
CONSUMER_NAME = "email.notify"
SEND_RETRY_BASE_SECONDS = 2.0
SEND_RETRY_MAX_SECONDS = 600.0
EMAIL_TASK_ROUTES = {name: {"queue": EMAIL_QUEUE} for name in (NOTIFY_DUE_TASK, SEND_TASK, SWEEP_TASK)}


def _context() -> WorkerContext | None:
    return getattr(current_task.app, "parley", None) if current_task else None


def _settings() -> Settings:
    context = _context()
    return context.settings if context is not None else get_settings()


def take_message(session: Session, delivery: EventDelivery) -> None:
    created = delivery.data
    assert isinstance(created, MessageCreated)
    note_message_created(session, _settings(), created.message, delivery.audience)


def schedule_window_end(deliveries: Sequence[EventDelivery]) -> None:
    """One task for the batch, when the window the first of them opened ends (a later window is the
    sweep's). Idempotent: a task that finds nothing due does nothing."""
    if not current_task or not deliveries:
        return  # outside a worker: beat's sweep finds the window
    settings = _settings()
    current_task.app.send_task(
        NOTIFY_DUE_TASK, queue=EMAIL_QUEUE, countdown=settings.email_batch_seconds + 0.2
    )


EMAIL_CONSUMER = Consumer(
    name=CONSUMER_NAME,
    event_types=frozenset({EventType.MESSAGE_CREATED}),
    handle=take_message,
    after_commit=schedule_window_end,
    kind=WorkKind.EMAIL,
)


# --- presence -------------------------------------------------------------------------------------

_redis_clients: dict[str, redis.Redis] = {}


def is_connected(settings: Settings, user_id: str) -> bool:
    """Whether the user has a live WebSocket on any API process (Redis presence). Without
    PARLEY_REDIS_URL a worker cannot see the API's in-process presence: not connected. A Redis
    error also counts as not connected: an email too many beats a message nobody hears of."""
    if not settings.redis_url:
        return False
    client = _redis_clients.get(settings.redis_url)
    if client is None:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        _redis_clients[settings.redis_url] = client
    try:
        return int(client.zcount(CONNECTIONS + user_id, f"({time.time()}", "+inf")) > 0
    except redis.RedisError as exc:
        log.warning("email.presence_unavailable", extra={"error": repr(exc)})
        return False


# --- tasks ----------------------------------------------------------------------------------------


def notify_due(task: Task) -> int:
    context = task.app.parley
    return _notify_due(task.app, context.settings, context)


def _notify_due(app: ParleyCelery, settings: Settings, context: WorkerContext) -> int:
    sessions = context.sessions
    recorded = 0
    with sessions() as session:
        due = due_threads(session, utcnow())
    for user_id, conversation_id in due:
        connected = is_connected(settings, user_id)

        def compose(facts: NotificationFacts) -> object:
            return compose_notification(settings, facts)

        with sessions() as session:
            email_id = prepare_notification(
                session, settings, user_id, conversation_id, connected=connected, compose=compose  # type: ignore[arg-type]
            )
        if email_id is None:
            log.info("email.notification_skipped", extra={"user_id": user_id, "conversation_id": conversation_id,
                                                           "connected": connected})
            continue
        recorded += 1
        app.send_task(SEND_TASK, args=[email_id], queue=EMAIL_QUEUE)
    return recorded


_senders: dict[tuple[str | None, str], EmailSender] = {}


def _sender(settings: Settings) -> EmailSender:
    key = (settings.smtp_url, settings.email_folder)
    if key not in _senders:
        _senders[key] = sender_for(settings)
    return _senders[key]


def send_email(task: Task, email_id: str) -> str:
    context = task.app.parley
    return deliver(context.settings, context.sessions, _sender(context.settings), email_id)


def deliver(settings: Settings, sessions: object, sender: EmailSender, email_id: str) -> str:
    """One attempt at one email; returns what happened (sent, retry, failed, skipped)."""
    return deliver_many(settings, sessions, sender, [email_id])[email_id]


def deliver_many(settings: Settings, sessions: object, sender: EmailSender, email_ids: list[str]) -> dict[str, str]:
    """One attempt at each of several emails (one claim, one SMTP connection, one record of those
    sent); the same rules as one by one. Returns what happened to each."""
    from integrations.email.compose import envelope_address

    with sessions() as session:  # type: ignore[operator]
        claimed = claim_emails(session, email_ids)
    results = {email_id: "skipped" for email_id in email_ids}
    if not claimed:
        return results
    outcomes = send_all(sender, envelope_address(settings.email_from), [(c.recipient, c.content) for c in claimed])
    sent = [c.id for c, outcome in zip(claimed, outcomes, strict=True) if outcome is None]
    with sessions() as session:  # type: ignore[operator]
        record_sent_many(session, sent)
    for email_id in sent:
        results[email_id] = "sent"
        log.info("email.sent", extra={"email_id": email_id, "attempts": next(c.attempts for c in claimed
                                                                              if c.id == email_id)})
    for email, outcome in zip(claimed, outcomes, strict=True):
        if outcome is not None:
            results[email.id] = _failed_attempt(settings, sessions, email.id, email.attempts, outcome)
    return results


def _failed_attempt(settings: Settings, sessions: object, email_id: str, attempts: int, exc: Exception) -> str:
    if isinstance(exc, PermanentFailure):
        with sessions() as session:  # type: ignore[operator]
            record_failed(session, email_id, str(exc))
        log.error("email.failed", extra={"email_id": email_id, "error": str(exc), "attempts": attempts})
        return "failed"
    if attempts >= settings.email_send_max_attempts:
        with sessions() as session:  # type: ignore[operator]
            record_failed(session, email_id, f"gave up after {attempts} attempts: {exc}")
        log.error("email.failed", extra={"email_id": email_id, "error": str(exc), "attempts": attempts})
        return "failed"
    delay = min(SEND_RETRY_MAX_SECONDS, SEND_RETRY_BASE_SECONDS * 2 ** (attempts - 1))
    delay *= 1 + random.random() * 0.1
    with sessions() as session:  # type: ignore[operator]
        record_retry(session, email_id, str(exc), utcnow() + timedelta(seconds=delay))
    log.warning("email.retry", extra={"email_id": email_id, "error": str(exc), "attempts": attempts,
                                      "delay": round(delay, 1)})
    running = current_task
    if running:
        running.app.send_task(SEND_TASK, args=[email_id], queue=EMAIL_QUEUE, countdown=delay)
    return "retry"


def email_sweep(task: Task) -> int:
    context = task.app.parley
    recorded = _notify_due(task.app, context.settings, context)
    with context.sessions() as session:
        due = due_emails(session, utcnow())
    for email_id in due:
        task.app.send_task(SEND_TASK, args=[email_id], queue=EMAIL_QUEUE)
    return recorded + len(due)


def register_email_tasks(app: ParleyCelery) -> None:
    app.task(notify_due, name=NOTIFY_DUE_TASK, bind=True, shared=False, soft_time_limit=240, time_limit=300)
    app.task(send_email, name=SEND_TASK, bind=True, shared=False, soft_time_limit=90, time_limit=120)
    app.task(email_sweep, name=SWEEP_TASK, bind=True, shared=False, soft_time_limit=240, time_limit=300)
    sweep = app.parley.settings.outbox_sweep_seconds
    app.conf.beat_schedule = {
        **app.conf.beat_schedule,
        "email-sweep": {
            "task": SWEEP_TASK,
            "schedule": timedelta(seconds=sweep),
            "options": {"queue": EMAIL_QUEUE, "expires": max(2 * sweep, 10.0)},
        },
    }
