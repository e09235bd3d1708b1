"""Parley's Celery tasks. Thin: they take ids, open their own session through parley.outbox and
record what happened; the rules live there.

- parley.dispatch_outbox: claim undispatched events and enqueue one consume task per consumer and
  event. Sent by the API after a commit (the nudge) and by beat every few seconds (the sweep).
- parley.consume_event: run one consumer on one event, at most once (its receipt says so).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from celery import Task

from parley.config import Settings
from parley.outbox.consumers import Consumer
from parley.outbox.dispatcher import ClaimedEvent, DispatchInterrupted, dispatch_pending
from parley.outbox.receipts import ConsumeOutcome, consume_once, record_failure

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery

log = logging.getLogger("parley.workers")

DISPATCH_TASK = "parley.dispatch_outbox"
CONSUME_TASK = "parley.consume_event"

# A dispatch run stops taking new batches after this long and hands the rest to a fresh task, well
# inside its time limit, so a large backlog never gets a run killed half-way.
DISPATCH_BUDGET_SECONDS = 20.0
DISPATCH_SOFT_TIME_LIMIT = 50
DISPATCH_TIME_LIMIT = 60
DISPATCH_BATCH_SIZE = 200  # events claimed per transaction
PUBLISH_BATCH_MAX = 1000  # broker commands buffered before kombu flushes on its own
RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 300.0
# An ordered consumer's task whose predecessor is unfinished comes back after a short, growing
# delay; after ORDER_WAIT_LIMIT waits (a few minutes) it runs anyway rather than stall the
# conversation behind a task that was lost.
ORDER_WAIT_BASE_SECONDS = 0.05
ORDER_WAIT_MAX_SECONDS = 5.0
ORDER_WAIT_LIMIT = 40


def register_tasks(app: ParleyCelery) -> None:
    app.task(
        dispatch_outbox,
        name=DISPATCH_TASK,
        bind=True,
        shared=False,
        soft_time_limit=DISPATCH_SOFT_TIME_LIMIT,
        time_limit=DISPATCH_TIME_LIMIT,
    )
    app.task(
        consume_event,
        name=CONSUME_TASK,
        bind=True,
        shared=False,
        max_retries=None,  # retries are counted here, per consumer, not by Celery
        # Defaults only: the dispatcher sends each task with its consumer's own limits.
        soft_time_limit=Consumer.soft_time_limit,
        time_limit=Consumer.time_limit,
    )


def dispatch_outbox(task: Task) -> int:
    app: ParleyCelery = task.app
    context = app.parley
    consume = app.tasks[CONSUME_TASK]
    # A publish batch sends each claimed batch's tasks to Redis in one round trip (transports
    # without batching publish at once); the dispatcher flushes it before marking the batch, and a
    # failure leaves the batch context with an exception, which discards what was not sent.
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH_MAX) as batch:

            def enqueue(consumer: Consumer, event: ClaimedEvent) -> None:
                consume.apply_async(
                    args=(consumer.name, event.id),
                    queue=consumer.kind.value,
                    soft_time_limit=consumer.soft_time_limit,
                    time_limit=consumer.time_limit,
                    producer=producer,
                )

            report = dispatch_pending(
                context.sessions,
                context.registry,
                enqueue,
                flush=batch.flush,
                batch_size=DISPATCH_BATCH_SIZE,
                max_seconds=DISPATCH_BUDGET_SECONDS,
            )
    except DispatchInterrupted as exc:
        log.warning(
            "outbox.enqueue_failed",
            extra={"task_id": task.request.id, "events": exc.report.events, "error": repr(exc.__cause__)},
        )
        return exc.report.events
    if report.more_pending:
        app.send_task(DISPATCH_TASK)
    if report.events:
        log.info(
            "outbox.dispatched",
            extra={"task_id": task.request.id, "events": report.events, "tasks": report.tasks},
        )
    return report.events


def consume_event(
    task: Task, consumer_name: str, event_id: int, *, failures: int = 0, order_waits: int = 0
) -> str:
    app: ParleyCelery = task.app
    context = app.parley
    fields: dict[str, Any] = {"task_id": task.request.id, "consumer": consumer_name, "event_id": event_id}
    consumer = context.registry.get(consumer_name)
    if consumer is None:
        log.error("consumer.unknown", extra=fields)
        return "unknown_consumer"
    enforce_order = order_waits < ORDER_WAIT_LIMIT
    try:
        outcome = consume_once(context.sessions, consumer, event_id, enforce_order=enforce_order)
    except Exception as exc:  # the handler's failure, whatever it is, is retried the same way
        if failures >= consumer.max_retries:
            record_failure(context.sessions, consumer, event_id, repr(exc))
            log.error("consumer.gave_up", extra={**fields, "attempts": failures + 1}, exc_info=True)
            return "failed"
        countdown = retry_delay(failures, longest_countdown(context.settings))
        log.warning(
            "consumer.retrying",
            extra={**fields, "attempt": failures + 1, "countdown": round(countdown, 3), "error": repr(exc)},
        )
        raise task.retry(
            kwargs={"failures": failures + 1, "order_waits": order_waits}, countdown=countdown, exc=exc
        ) from exc
    if outcome is ConsumeOutcome.WAITING:
        raise task.retry(
            kwargs={"failures": failures, "order_waits": order_waits + 1},
            countdown=order_wait_delay(order_waits, longest_countdown(context.settings)),
        )
    if not enforce_order and consumer.ordered:
        log.warning("consumer.order_wait_exhausted", extra={**fields, "waits": order_waits})
    log.log(
        logging.WARNING if outcome is ConsumeOutcome.MISSING else logging.DEBUG,
        f"consumer.{outcome.value}",
        extra=fields,
    )
    return outcome.value


def longest_countdown(settings: Settings) -> float:
    """No countdown may reach the Redis visibility timeout: a task waiting out its countdown sits
    unacknowledged in a worker, and Redis would hand it to a second worker."""
    return min(RETRY_MAX_SECONDS, settings.broker_visibility_timeout / 2)


def retry_delay(failures: int, maximum: float) -> float:
    """Exponential backoff with full jitter: retries of many failing tasks spread out instead of
    arriving together."""
    return random.uniform(0, min(maximum, RETRY_BASE_SECONDS * 2**failures))


def order_wait_delay(waits: int, maximum: float) -> float:
    ceiling = min(ORDER_WAIT_MAX_SECONDS, maximum, ORDER_WAIT_BASE_SECONDS * 2**waits)
    return random.uniform(ceiling / 2, ceiling)
