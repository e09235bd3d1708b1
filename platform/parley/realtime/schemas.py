"""HTTP shapes of the realtime routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: int | None = Field(
        default=None, ge=0, le=2**63 - 1,
        description="The last event_id this client saw: every later event is sent first, in order.",
    )
    ticket: str | None = Field(default=None, max_length=200, description="A one-time ticket, for browsers.")


class WsTicketOut(BaseModel):
    ticket: str
    expires_at: datetime


class PresenceOut(BaseModel):
    user_id: str
    status: Literal["online", "offline"]
    last_seen_at: datetime | None
