"""Writing outbox events in the caller's transaction."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from parley.events import PAYLOADS, EventType
from parley.models import Event


def record_event(
    session: AsyncSession, event_type: EventType, payload: BaseModel, *, conversation_id: str | None
) -> Event:
    """Add an event row to the current transaction: it commits, or rolls back, with the change."""
    assert isinstance(payload, PAYLOADS[event_type]), f"{event_type} takes {PAYLOADS[event_type].__name__}"
    event = Event(type=event_type.value, conversation_id=conversation_id, payload=payload.model_dump(mode="json"))
    session.add(event)
    return event
