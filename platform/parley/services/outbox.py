"""Writing outbox events in the caller's transaction."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Insert, insert, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from parley.events import PAYLOADS, EventType
from parley.models import Event

# Event ids must grow in commit order: a reconnecting WebSocket client replays "every event after
# the last id I saw", and the realtime tail reads "ids after my position"; an id handed out by a
# transaction that commits later than a larger one would be skipped by both. PostgreSQL assigns
# identity values at insert, so writers of events take this transaction-scoped lock before the
# insert and hold it to commit: the next writer's id comes after this one is visible. It serialises
# only the short tail of event-writing transactions (insert to commit), so record events last.
# SQLite needs nothing: its write transactions are already serial (BEGIN IMMEDIATE).
EVENT_ORDER_LOCK = text("SELECT pg_advisory_xact_lock(7310582945120001)")


def _event_insert(
    event_type: EventType, payload: BaseModel, conversation_id: str | None, user_id: str | None
) -> Insert:
    if not isinstance(payload, PAYLOADS[event_type]):
        raise TypeError(f"{event_type} takes {PAYLOADS[event_type].__name__}, not {type(payload).__name__}")
    return insert(Event).values(
        type=event_type.value, conversation_id=conversation_id, user_id=user_id, payload=payload.model_dump(mode="json")
    )


async def record_event(
    session: AsyncSession,
    event_type: EventType,
    payload: BaseModel,
    *,
    conversation_id: str | None,
    user_id: str | None = None,
) -> None:
    """Add an event row to the current transaction: it commits, or rolls back, with the change.
    An event of a conversation concerns its members; one of no conversation may name the one user
    it concerns instead (`user_id`)."""
    statement = _event_insert(event_type, payload, conversation_id, user_id)
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(EVENT_ORDER_LOCK)
    await session.execute(statement)


def record_event_sync(
    session: Session,
    event_type: EventType,
    payload: BaseModel,
    *,
    conversation_id: str | None,
    user_id: str | None = None,
) -> None:
    """record_event for a worker's synchronous session."""
    statement = _event_insert(event_type, payload, conversation_id, user_id)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(EVENT_ORDER_LOCK)
    session.execute(statement)
