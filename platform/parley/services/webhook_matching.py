"""Which webhook endpoints an event goes to, and the delivery rows that say so. Shared by the
fan-out consumer (a worker) and replays and redeliveries (the API), through the same services:
the rules and the statements are built here once, each caller executes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Table
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from parley.events import PUBLIC_EVENT_TYPES, EventType
from parley.ids import new_id
from parley.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

ALL_EVENTS = "*"


@dataclass(frozen=True)
class EventFacts:
    """What the matching needs to know of one event."""

    id: int
    type: str
    payload: Mapping[str, Any]
    audience: frozenset[str]  # the users the event concerns (events.audience)


def subscribes(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return ALL_EVENTS in endpoint.event_types or event_type in endpoint.event_types


def wants(endpoint: WebhookEndpoint, event: EventFacts) -> bool:
    """The admin's endpoints see every conversation; a user's or bot's endpoint sees the
    conversations its owner is in. A test event goes to its own endpoint alone, whatever it
    subscribed to; endpoint.disabled goes to the disabled endpoint owner's other endpoints (its
    audience is that owner)."""
    if event.type not in PUBLIC_EVENT_TYPES:
        return False  # internal bookkeeping (attachment.uploaded/deleted), even for "*"; replays too
    if event.type == EventType.WEBHOOK_TEST:
        return endpoint.id == event.payload.get("endpoint_id")
    if not subscribes(endpoint, event.type) or endpoint.id == event.payload.get("endpoint_id"):
        return False
    return endpoint.owner_id is None or endpoint.owner_id in event.audience


def delivery_rows(endpoints: Iterable[WebhookEndpoint], event: EventFacts, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id(),
            "endpoint_id": endpoint.id,
            "event_id": event.id,
            "event_type": event.type,
            "status": DeliveryStatus.PENDING,
            "due_at": now,
            "attempt_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for endpoint in endpoints
        if endpoint.enabled and wants(endpoint, event)
    ]


def schedule_statement(dialect: str, *, again: bool) -> Insert:
    """Inserts delivery rows (executed with a list of delivery_rows), idempotent per (endpoint,
    event). `again` (a replay or a manual retry): an existing delivery is due again now with a
    fresh set of attempts, keeping its id (the receiver's deduplication key) and its log, unless a
    worker is delivering it right now. Parameters rather than inlined values: the statement
    compiles once and is cached, which matters on the fan-out path."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    table = cast(Table, WebhookDelivery.__table__)
    statement = insert(table)
    if not again:
        return statement.on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
    return statement.on_conflict_do_update(
        index_elements=["endpoint_id", "event_id"],
        set_={
            "status": DeliveryStatus.PENDING,
            "due_at": statement.excluded.due_at,
            "attempt_count": 0,
            "updated_at": statement.excluded.updated_at,
        },
        where=table.c.status != DeliveryStatus.DELIVERING,
    )
