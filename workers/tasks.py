"""Parley's Celery tasks. Thin: they take ids, open their own session through parley.outbox and
record what happened; the rules live there.

- parley.dispatch_outbox: claim undispatched events and enqueue one consume task per consumer and
  batch of events. Sent after a commit (the wake-up) and by beat every few seconds (the sweep, which
  also re-dispatches events whose consumers left no receipt: parley.outbox.dispatcher).
- parley.consume_events: run one consumer on a batch of events, each at most once (receipts).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Task

from parley.config import Settings
from parley.outbox.consumers import Consumer
from parley.outbox.dispatcher import ClaimedEvent, DispatchInterrupted, dispatch_pending
from workers.task_names import CONSUME_TASK, DISPATCH_TASK
from parley.outbox.receipts import ConsumeOutcome, consume_batch, consume_once, record_failure

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery

log = logging.getLogger("parley.workers")


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
        consume_events,
        name=CONSUME_TASK,
        bind=True,
        shared=False,
        max_retries=None,  # retries are counted here, per consumer, not by Celery
        # Defaults only: the dispatcher sends each task with its consumer's own limits.
        soft_time_limit=Consumer.soft_time_limit,
        time_limit=Consumer.time_limit,
    )


def dispatch_outbox(task: Task, sweep: bool = False) -> int:
    app: ParleyCelery = task.app
    context = app.parley
    consume = app.tasks[CONSUME_TASK]
    # A publish batch sends each claimed batch's tasks to Redis in one round trip (transports
    # without batching publish at once); the dispatcher flushes it before marking the batch, and a
    # failure leaves the batch context with an exception, which discards what was not sent.
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH_MAX) as batch:

            def enqueue(consumer: Consumer, events: Sequence[ClaimedEvent]) -> None:
                consume.apply_async(
                    args=(consumer.name, [event.id for event in events]),
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
                redispatch_after=context.settings.outbox_redispatch_seconds,
                redispatch_due=sweep,
            )
    except DispatchInterrupted as exc:
        log.warning(
            "outbox.enqueue_failed",
            extra={"task_id": task.request.id, "events": exc.report.events, "error": repr(exc.__cause__)},
        )
        return exc.report.events
    if report.more_pending:
        app.send_task(DISPATCH_TASK)
    if report.events or report.redispatched:
        log.info(
            "outbox.dispatched",
            extra={
                "task_id": task.request.id,
                "events": report.events,
                "tasks": report.tasks,
                "redispatched": report.redispatched,
            },
        )
    return report.events


def consume_events(
    task: Task, consumer_name: str, event_ids: list[int], *, failures: int = 0, order_waits: int = 0
) -> dict[str, int]:
    """Run the consumer on a batch in one transaction. If it fails, run the events one at a time,
    so only the failing ones are retried (each on its own backoff) and the rest go ahead."""
    app: ParleyCelery = task.app
    context = app.parley
    fields: dict[str, Any] = {"task_id": task.request.id, "consumer": consumer_name, "events": len(event_ids)}
    consumer = context.registry.get(consumer_name)
    if consumer is None:
        log.error("consumer.unknown", extra=fields)
        return {"unknown_consumer": len(event_ids)}
    enforce_order = order_waits < ORDER_WAIT_LIMIT
    if not enforce_order and consumer.ordered:
        log.warning("consumer.order_wait_exhausted", extra={**fields, "waits": order_waits})
    try:
        result = consume_batch(context.sessions, consumer, event_ids, enforce_order=enforce_order)
    except Exception as exc:  # the handler's failure, whatever it is, is retried the same way
        if len(event_ids) > 1:
            log.warning("consumer.batch_failed", extra={**fields, "error": repr(exc)})
            return _consume_one_by_one(task, consumer, event_ids, enforce_order, order_waits)
        return _retry_or_give_up(task, consumer, event_ids[0], exc, failures, order_waits)
    if result.missing:
        log.warning("consumer.missing", extra={**fields, "event_ids": result.missing})
    if result.waiting:
        _wait_for_predecessors(task, consumer, result.waiting, failures, order_waits)
    return {"done": len(result.done), "duplicate": len(result.duplicate), "waiting": len(result.waiting)}


def _consume_one_by_one(
    task: Task, consumer: Consumer, event_ids: list[int], enforce_order: bool, order_waits: int
) -> dict[str, int]:
    counts: dict[str, int] = {}
    waiting: list[int] = []
    for event_id in event_ids:
        try:
            outcome = consume_once(task.app.parley.sessions, consumer, event_id, enforce_order=enforce_order)
        except Exception as exc:
            _retry_or_give_up(task, consumer, event_id, exc, 0, order_waits, in_place=False)
            outcome_name = "retrying"
        else:
            outcome_name = outcome.value
            if outcome is ConsumeOutcome.WAITING:
                waiting.append(event_id)
        counts[outcome_name] = counts.get(outcome_name, 0) + 1
    if waiting:
        _wait_for_predecessors(task, consumer, waiting, 0, order_waits)
    return counts


def _retry_or_give_up(
    task: Task,
    consumer: Consumer,
    event_id: int,
    exc: Exception,
    failures: int,
    order_waits: int,
    *,
    in_place: bool = True,
) -> dict[str, int]:
    """Retry one failed event with backoff (the task itself, or a new task for one event of a
    batch), or record the failure once its retries are spent."""
    context = task.app.parley
    fields = {"task_id": task.request.id, "consumer": consumer.name, "event_id": event_id}
    if failures >= consumer.max_retries:
        record_failure(context.sessions, consumer, event_id, repr(exc))
        log.error("consumer.gave_up", extra={**fields, "attempts": failures + 1}, exc_info=exc)
        return {"failed": 1}
    countdown = retry_delay(failures, longest_countdown(context.settings))
    log.warning(
        "consumer.retrying",
        extra={**fields, "attempt": failures + 1, "countdown": round(countdown, 3), "error": repr(exc)},
    )
    kwargs = {"failures": failures + 1, "order_waits": order_waits}
    if in_place:
        raise task.retry(args=(consumer.name, [event_id]), kwargs=kwargs, countdown=countdown, exc=exc) from exc
    _send_again(task, consumer, [event_id], kwargs, countdown)
    return {"retrying": 1}


def _wait_for_predecessors(
    task: Task, consumer: Consumer, event_ids: list[int], failures: int, order_waits: int
) -> None:
    """An ordered consumer's events whose conversation's previous event is not finished: try them
    again shortly, with a growing delay (and after ORDER_WAIT_LIMIT waits, regardless)."""
    countdown = order_wait_delay(order_waits, longest_countdown(task.app.parley.settings))
    _send_again(task, consumer, event_ids, {"failures": failures, "order_waits": order_waits + 1}, countdown)


def _send_again(task: Task, consumer: Consumer, event_ids: list[int], kwargs: dict[str, int], countdown: float) -> None:
    task.app.tasks[CONSUME_TASK].apply_async(
        args=(consumer.name, event_ids),
        kwargs=kwargs,
        countdown=countdown,
        queue=consumer.kind.value,
        soft_time_limit=consumer.soft_time_limit,
        time_limit=consumer.time_limit,
    )


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
