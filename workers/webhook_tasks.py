"""Outbound webhooks on Celery: the fan-out consumer and the sweep task. Thin: the rules are in
parley.services.webhook_deliveries, the sending in webhooks/.

- consumer `webhooks` (queue `webhooks`, every event type): in the consumer's receipt transaction,
  writes one pending delivery per endpoint that wants the event (going by the event's audience);
  after that commits, wakes this process's delivery engine (webhooks/engine.py), which sends
  outside any transaction. Deliveries a lost wake-up leaves behind are found by the engine's sweep.
- task `parley.deliver_webhooks` (queue `webhooks`, sent by beat every PARLEY_OUTBOX_SWEEP_SECONDS):
  starts or wakes the engine of the process that runs it, so every worker process ends up with a
  running engine even before its first fan-out, and retries come due without a fan-out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from collections.abc import Sequence

from celery import Task, current_task
from sqlalchemy.orm import Session

from parley.events import PUBLIC_EVENT_TYPES
from parley.outbox.consumers import Consumer, EventDelivery, WorkKind
from parley.services.webhook_deliveries import fan_out
from parley.services.webhook_matching import EventFacts
from webhooks.engine import process_engine

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery

DELIVER_TASK = "parley.deliver_webhooks"
CONSUMER_NAME = "webhooks"


def fan_out_event(session: Session, delivery: EventDelivery) -> None:
    fan_out(session, EventFacts(delivery.event_id, delivery.type, delivery.payload, frozenset(delivery.audience)))


def wake_engine(_deliveries: Sequence[EventDelivery]) -> None:
    # current_task is a proxy: false when no task runs (a consumer called directly, outside a worker).
    context = getattr(current_task.app, "parley", None) if current_task else None
    if context is None:
        return  # a consumer run outside a worker: beat's sweep wakes an engine soon enough
    process_engine(context.settings, context.sessions).wake()


def deliver_webhooks(task: Task) -> None:
    context = task.app.parley
    process_engine(context.settings, context.sessions).wake()


WEBHOOK_CONSUMER = Consumer(
    name=CONSUMER_NAME,
    event_types=PUBLIC_EVENT_TYPES,  # every type shown outside, including those added later
    handle=fan_out_event,
    after_commit=wake_engine,
    kind=WorkKind.WEBHOOKS,
)


def register_webhook_tasks(app: ParleyCelery) -> None:
    app.task(deliver_webhooks, name=DELIVER_TASK, bind=True, shared=False, soft_time_limit=20, time_limit=30)
    sweep = app.parley.settings.outbox_sweep_seconds
    app.conf.beat_schedule = {
        **app.conf.beat_schedule,
        "webhooks-sweep": {
            "task": DELIVER_TASK,
            "schedule": timedelta(seconds=sweep),
            "options": {"queue": WorkKind.WEBHOOKS.value, "expires": max(2 * sweep, 10.0)},
        },
    }
