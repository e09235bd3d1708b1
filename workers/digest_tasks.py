"""Digests on Celery. Thin: the rules are in parley.services.email_digests, composing in
integrations/email/digests.py, sending is the email send path (workers/email_tasks.deliver).

- task `parley.digest_sweep` (beat, every PARLEY_DIGEST_SWEEP_SECONDS): reads the due users off
  the users.next_digest_at index and sends one `parley.digest_batch` per BATCH_SIZE of them.
- task `parley.digest_batch`: in one transaction records the batch's digests (outgoing emails and
  digest_items) and reschedules its users (prepare_digests), then hands each email to the send path:
  `deliver_many` claims them (a lease; never once sent), so an email a crash left behind is sent by the
  email sweep, never twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import Task
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from integrations.email.digests import compose_digest
from integrations.email.sender import EmailSender
from parley.config import Settings
from parley.models import utcnow
from parley.services.email_digests import BATCH_SIZE, DigestFacts, PreparedDigests, due_digest_users, prepare_digests
from workers.email_tasks import EMAIL_QUEUE, _sender, deliver_many

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery

log = logging.getLogger("parley.email")

DIGEST_SWEEP_TASK = "parley.digest_sweep"
DIGEST_BATCH_TASK = "parley.digest_batch"
DIGEST_TASK_ROUTES = {name: {"queue": EMAIL_QUEUE} for name in (DIGEST_SWEEP_TASK, DIGEST_BATCH_TASK)}


def run_digest_batch(
    settings: Settings,
    sessions: Callable[[], Session],
    sender: EmailSender,
    user_ids: Sequence[str],
    *,
    force: bool = False,
    now: datetime | None = None,
) -> tuple[PreparedDigests, dict[str, int]]:
    """Record the batch's digests, then send them. A racing forced run that listed one of the
    messages first makes the transaction fail: it runs once more and lists what is left."""

    def compose(facts: DigestFacts) -> Any:
        return compose_digest(settings, facts)

    for attempt in range(3):
        try:
            with sessions() as session:
                prepared = prepare_digests(session, settings, user_ids, compose=compose, force=force, now=now)
            break
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("digest.batch_raced", extra={"users": len(user_ids)})
    outcomes: dict[str, int] = {}
    for outcome in deliver_many(settings, sessions, sender, prepared.email_ids).values():
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return prepared, outcomes


def digest_batch(task: Task, user_ids: list[str], force: bool = False) -> int:
    context = task.app.parley
    prepared, outcomes = run_digest_batch(context.settings, context.sessions, _sender(context.settings), user_ids,
                                          force=force)
    log.info("digest.batch", extra={"users": prepared.users, "digests": len(prepared.email_ids),
                                    "messages": prepared.messages, **outcomes})
    return len(prepared.email_ids)


def digest_sweep(task: Task) -> int:
    context = task.app.parley
    with context.sessions() as session:
        due = due_digest_users(session, utcnow())
    expires = max(2 * context.settings.digest_sweep_seconds, 60.0)
    for start in range(0, len(due), BATCH_SIZE):
        task.app.send_task(DIGEST_BATCH_TASK, args=[due[start:start + BATCH_SIZE]], queue=EMAIL_QUEUE,
                           expires=expires)
    return len(due)


def register_digest_tasks(app: ParleyCelery) -> None:
    app.task(digest_sweep, name=DIGEST_SWEEP_TASK, bind=True, shared=False, soft_time_limit=240, time_limit=300)
    app.task(digest_batch, name=DIGEST_BATCH_TASK, bind=True, shared=False, soft_time_limit=240, time_limit=300)
    every = app.parley.settings.digest_sweep_seconds
    app.conf.beat_schedule = {
        **app.conf.beat_schedule,
        "digest-sweep": {
            "task": DIGEST_SWEEP_TASK,
            "schedule": timedelta(seconds=every),
            "options": {"queue": EMAIL_QUEUE, "expires": max(every, 10.0)},
        },
    }
