"""One-time WebSocket tickets: a browser cannot put a bearer token on the upgrade request, and a
long-lived token must never travel in a URL, so it trades its token for a ticket that is good for
one connection within a minute."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from parley.db import transaction
from parley.models import WsTicket, utcnow
from parley.services.tokens import hash_token

TICKET_PREFIX = "wst_"


@dataclass(frozen=True)
class IssuedTicket:
    ticket: str
    expires_at: datetime


def issue_ticket(session: Session, user_id: str, lifetime_seconds: int) -> IssuedTicket:
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    expires_at = now + timedelta(seconds=lifetime_seconds)
    with transaction(session):
        # Tickets live a minute; clearing the dead ones here keeps the table tiny without a job.
        session.execute(delete(WsTicket).where(WsTicket.expires_at < now))
        session.add(WsTicket(ticket_hash=hash_token(ticket), user_id=user_id, expires_at=expires_at))
    return IssuedTicket(ticket=ticket, expires_at=expires_at)


def redeem_ticket(session: Session, ticket: str) -> str | None:
    """The user id the ticket was issued to, or None if it is unknown, expired or already used.
    One UPDATE both checks and spends it, so two connections racing with one ticket cannot both win."""
    if not ticket.startswith(TICKET_PREFIX) or len(ticket) > 100:
        return None
    now = utcnow()
    with transaction(session):
        return session.scalar(
            update(WsTicket)
            .where(WsTicket.ticket_hash == hash_token(ticket), WsTicket.used_at.is_(None), WsTicket.expires_at > now)
            .values(used_at=now)
            .returning(WsTicket.user_id)
        )
