"""Writing outbox events in the caller's transaction."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from parley.events import PAYLOADS, EventType
from parley.models import Event


async def record_event(
    session: AsyncSession, event_type: EventType, payload: BaseModel, *, conversation_id: str | None
) -> None:
    """Add an event row to the current transaction: it commits, or rolls back, with the change."""
    if not isinstance(payload, PAYLOADS[event_type]):
        raise TypeError(f"{event_type} takes {PAYLOADS[event_type].__name__}, not {type(payload).__name__}")
    await session.execute(
        insert(Event).values(type=event_type.value, conversation_id=conversation_id, payload=payload.model_dump(mode="json"))
    )
