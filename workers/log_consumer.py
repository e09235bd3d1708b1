"""A consumer that only logs each event (at DEBUG) and records its receipt: the benchmark's no-op,
and a way to watch events flow (PARLEY_EXTRA_CONSUMERS=workers.log_consumer PARLEY_LOG_LEVEL=DEBUG).
Not registered unless named there."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from parley.events import EventType
from parley.outbox.consumers import Consumer, EventDelivery, WorkKind

log = logging.getLogger("parley.consumers.log")


def log_event(session: Session, delivery: EventDelivery) -> None:
    log.debug(
        "consumer.log",
        extra={
            "event_id": delivery.event_id,
            "event_type": delivery.type,
            "conversation_id": delivery.conversation_id,
            "sequence": delivery.sequence,
        },
    )


# On the webhooks queue, where a consumer of every event type (like a webhook) belongs.
CONSUMERS = [Consumer(name="log", event_types=frozenset(EventType), handle=log_event, kind=WorkKind.WEBHOOKS)]
