"""Writing outbox events in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from parley.db import note_events_recorded
from parley.events import PAYLOADS, EventType
from parley.models import Event

# Event ids must grow in commit order: a reconnecting WebSocket client replays "every event after
# the last id I saw", and the realtime tail reads "ids after my position"; an id handed out by a
# transaction that commits later than a larger one would be skipped by both. PostgreSQL assigns
# identity values at insert, so writers of events take this transaction-scoped lock before the
# insert and hold it to commit: the next writer's id comes after this one is visible. It serialises
# only the short tail of event-writing transactions (insert to commit), so record events last.
# SQLite needs nothing: its write transactions are already serial (BEGIN IMMEDIATE).
EVENT_ORDER_LOCK_KEY = 7310582945120001
EVENT_ORDER_LOCK = text(f"SELECT pg_advisory_xact_lock({EVENT_ORDER_LOCK_KEY})")
_INSERT_EVENT = insert(Event)


def record_event(
    session: Session,
    event_type: EventType,
    payload: BaseModel,
    *,
    conversation_id: str | None,
    audience: Iterable[str],
) -> None:
    """Add an event row to the current transaction: it commits, or rolls back, with the change.
    `audience` names the users the event concerns (a conversation's members, an upload's owner);
    realtime, replay, webhooks and consumers go by it. After commit, the session's "events
    committed" hook wakes whoever follows the outbox."""
    if not isinstance(payload, PAYLOADS[event_type]):
        raise TypeError(
            f"{event_type} takes {PAYLOADS[event_type].__name__}, not {type(payload).__name__}"
        )
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(EVENT_ORDER_LOCK)
    connection.execute(
        _INSERT_EVENT,
        {
            "type": event_type.value,
            "conversation_id": conversation_id,
            "audience": sorted(set(audience)),
            "payload": payload.model_dump(mode="json"),
        },
    )
    note_events_recorded(session)
