"""Writing outbox events in the caller's transaction."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from parley.events import PAYLOADS, EventType
from parley.models import Event


async def record_event(
    session: AsyncSession, event_type: EventType, payload: BaseModel, *, conversation_id: str | None
) -> None:
    """Add an event row to the current transaction: it commits, or rolls back, with the change."""
    await session.execute(_event_insert(event_type, payload, conversation_id))


def record_event_sync(
    session: Session, event_type: EventType, payload: BaseModel, *, conversation_id: str | None
) -> None:
    """record_event for the workers' synchronous sessions."""
    session.execute(_event_insert(event_type, payload, conversation_id))


def _event_insert(event_type: EventType, payload: BaseModel, conversation_id: str | None) -> Insert:
    if not isinstance(payload, PAYLOADS[event_type]):
        raise TypeError(f"{event_type} takes {PAYLOADS[event_type].__name__}, not {type(payload).__name__}")
    return insert(Event).values(
        type=event_type.value, conversation_id=conversation_id, payload=payload.model_dump(mode="json")
    )
