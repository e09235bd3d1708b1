"""Webhook deliveries from the workers' side, in short synchronous transactions: fanning an event
out to the endpoints that want it, claiming due deliveries for sending, and recording what each
attempt got, which decides success, the next retry or failure, and when an endpoint is disabled.

The HTTP call itself happens between a claim and its record, outside any transaction, in the
webhooks package. A claim is a lease: the delivery is `delivering` until `due_at`; if the worker
dies mid-call the lease lapses and the next claim takes it again (one more attempt, never none).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.db import transaction
from parley.events import EndpointDisabled, EventType
from parley.ids import new_id
from parley.models import (
    DeliveryStatus,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from parley.secret_box import SecretUnreadable, secret_box
from parley.services.outbox import record_event
from parley.services.webhook_matching import EventFacts, delivery_rows, schedule_statement

log = logging.getLogger("parley.webhooks")

LIVE = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)
# A claim outlives the HTTP timeout by this much before another worker may take the delivery over.
LEASE_MARGIN_SECONDS = 5.0
JITTER = 0.1  # up to 10% added to each retry delay, so a recovering receiver is not hit all at once
MAX_ERROR_CHARS = 500
GONE = 410
RETRY_AFTER_STATUSES = frozenset({429, 503})
RETRY_AFTER_MAX_SECONDS = 86_400.0  # a receiver asking for more than a day gets a day
LOST_ATTEMPT = "interrupted: the worker delivering it stopped before an answer was recorded"


@dataclass(frozen=True)
class ClaimedDelivery:
    """Everything the sender needs, read in the claiming transaction."""

    delivery_id: str  # the webhook-id header
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]  # every secret that signs now: the current one, and the previous in its overlap
    body: bytes
    attempt: int  # attempt_count as claimed: a record for an older claim changes nothing


@dataclass(frozen=True)
class Claim:
    deliveries: list[ClaimedDelivery]
    next_due_at: datetime | None  # when the next live delivery not yet due comes due


@dataclass(frozen=True)
class AttemptResult:
    delivery_id: str
    endpoint_id: str
    attempt: int
    attempted_at: datetime
    duration_ms: int | None
    status_code: int | None = None
    response_excerpt: str | None = None
    error: str | None = None
    retry_after_seconds: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# --- fan-out ------------------------------------------------------------------------------------


def fan_out(session: Session, event: EventFacts) -> int:
    """In the caller's transaction (the fan-out consumer's receipt): one pending delivery per
    enabled endpoint that wants the event, at most one per endpoint and event. Returns how many."""
    # Narrow down in SQL to the endpoints that can want the event; `wants` has the last word.
    query = select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))
    if event.type == EventType.WEBHOOK_TEST:
        query = query.where(WebhookEndpoint.id == str(event.payload.get("endpoint_id")))
    else:
        query = query.where(WebhookEndpoint.owner_id.is_(None) | WebhookEndpoint.owner_id.in_(event.audience))
    rows = delivery_rows(session.scalars(query), event, utcnow())
    if rows:
        session.execute(schedule_statement(session.get_bind().dialect.name, again=False), rows)
    return len(rows)


# --- claiming -----------------------------------------------------------------------------------


def claim_due(sessions: sessionmaker[Session], settings: Settings, limit: int) -> Claim:
    """Claim up to `limit` due deliveries, at most PARLEY_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT in
    flight per endpoint (counting every worker's unexpired claims), oldest due first, so one
    endpoint's backlog or hang never takes the whole budget."""
    now = utcnow()
    pick = _pick_statement(now, settings.webhook_max_in_flight_per_endpoint, limit)
    with sessions() as session:
        # Engines look often; most looks find nothing, and a read transaction does not queue for
        # SQLite's write lock.
        with session.begin():
            picked = session.scalars(pick).all()
            if not picked:
                return Claim([], _next_due(session, now))
        with transaction(session):
            # The lock below re-checks that each picked delivery is still due and unclaimed.
            deliveries = _claim(session, settings, picked, now)
            if len(deliveries) == limit:
                return Claim(deliveries, now)  # more may be due: the caller comes straight back
            return Claim(deliveries, _next_due(session, now))


def _claim(session: Session, settings: Settings, picked: Sequence[str], now: datetime) -> list[ClaimedDelivery]:
    if not picked:
        return []
    # SKIP LOCKED: claimers side by side take different rows. On SQLite the write transaction is
    # already exclusive and the clause renders as nothing.
    claimed = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.status)
        .where(WebhookDelivery.id.in_(picked), WebhookDelivery.status.in_(LIVE), WebhookDelivery.due_at <= now)
        .with_for_update(skip_locked=True)
    ).all()
    ids = [row.id for row in claimed]
    lost = [row.id for row in claimed if row.status is DeliveryStatus.DELIVERING]
    if lost:
        session.add_all(WebhookAttempt(id=new_id(), delivery_id=d, attempted_at=now, error=LOST_ATTEMPT) for d in lost)
    if not ids:
        return []
    lease_until = now + timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(
            status=DeliveryStatus.DELIVERING,
            due_at=lease_until,
            attempt_count=WebhookDelivery.attempt_count + 1,
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )
    return _claimed_details(session, settings, ids, now)


def _next_due(session: Session, now: datetime) -> datetime | None:
    # Deliveries due now but not claimed are held back by their endpoint's cap: a finishing
    # delivery frees the slot (and wakes its engine), so only later due times count here.
    return session.scalar(
        select(func.min(WebhookDelivery.due_at))
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.status.in_(LIVE), WebhookDelivery.due_at > now, WebhookEndpoint.enabled.is_(True))
    )


def _pick_statement(now: datetime, per_endpoint: int, limit: int) -> Select[tuple[str]]:
    in_flight = (
        select(WebhookDelivery.endpoint_id, func.count().label("n"))
        .where(WebhookDelivery.status == DeliveryStatus.DELIVERING, WebhookDelivery.due_at > now)
        .group_by(WebhookDelivery.endpoint_id)
        .subquery()
    )
    ranked = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.endpoint_id,
            WebhookDelivery.due_at,
            func.row_number()
            .over(partition_by=WebhookDelivery.endpoint_id, order_by=(WebhookDelivery.due_at, WebhookDelivery.id))
            .label("rank"),
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookEndpoint.enabled.is_(True), WebhookDelivery.status.in_(LIVE), WebhookDelivery.due_at <= now)
        .subquery()
    )
    return (
        select(ranked.c.id)
        .outerjoin(in_flight, in_flight.c.endpoint_id == ranked.c.endpoint_id)
        .where(ranked.c.rank <= per_endpoint - func.coalesce(in_flight.c.n, 0))
        .order_by(ranked.c.due_at)
        .limit(limit)
    )


def _claimed_details(session: Session, settings: Settings, ids: Sequence[str], now: datetime) -> list[ClaimedDelivery]:
    # Plain columns rather than ORM objects: this runs for every delivery.
    rows = session.execute(
        select(
            WebhookDelivery.id,
            WebhookDelivery.attempt_count,
            WebhookEndpoint.id.label("endpoint_id"),
            WebhookEndpoint.url,
            WebhookEndpoint.secret_encrypted,
            WebhookEndpoint.previous_secret_encrypted,
            WebhookEndpoint.previous_secret_expires_at,
            Event.id.label("event_id"),
            Event.type,
            Event.created_at,
            Event.payload,
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id.in_(ids))
    ).all()
    box = secret_box(settings)
    claimed = []
    for row in rows:
        encrypted = [row.secret_encrypted]
        expires = row.previous_secret_expires_at
        if row.previous_secret_encrypted is not None and expires is not None and expires > now:
            encrypted.append(row.previous_secret_encrypted)
        try:
            secrets = tuple(box.decrypt(s) for s in encrypted)
        except SecretUnreadable:
            secrets = ()  # the sender records the failure; the log says why
        claimed.append(
            ClaimedDelivery(
                delivery_id=row.id,
                endpoint_id=row.endpoint_id,
                url=row.url,
                secrets=secrets,
                body=webhook_body(row.type, row.created_at, row.payload, row.event_id),
                attempt=row.attempt_count,
            )
        )
    return claimed


def webhook_body(event_type: str, created_at: datetime, payload: dict[str, Any], event_id: int) -> bytes:
    """Standard Webhooks' {type, timestamp, data} with the payload the REST API and WebSocket
    show, plus `sequence`: the event's id, which grows within a conversation (with gaps), so a
    receiver can put a conversation's events in order."""
    body = {
        "type": event_type,
        "timestamp": created_at.isoformat().replace("+00:00", "Z"),
        "data": payload,
        "sequence": event_id,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- recording ----------------------------------------------------------------------------------


def record_attempts(sessions: sessionmaker[Session], settings: Settings, results: Sequence[AttemptResult]) -> None:
    """One transaction for a batch of finished attempts: each is logged, and each still holding
    its claim moves on (succeeded, pending again, or failed). Successes, the bulk of the traffic,
    take a few set-wise statements; the rest go through the rules one by one."""
    if not results:
        return
    deliveries_table = cast(Table, WebhookDelivery.__table__)
    with sessions() as session, transaction(session):
        now = utcnow()
        session.execute(insert(cast(Table, WebhookAttempt.__table__)), [_attempt_row(r) for r in results])
        successes = [r for r in results if r.succeeded]
        if successes:
            # A claim that lapsed (another worker took the delivery over) matches nothing here.
            session.execute(
                update(deliveries_table)
                .where(
                    deliveries_table.c.id == bindparam("delivery"),
                    deliveries_table.c.status == DeliveryStatus.DELIVERING,
                    deliveries_table.c.attempt_count == bindparam("attempt"),
                )
                .values(status=DeliveryStatus.SUCCEEDED, due_at=None, updated_at=now),
                [{"delivery": r.delivery_id, "attempt": r.attempt} for r in successes],
            )
            session.execute(
                update(WebhookEndpoint)
                .where(
                    WebhookEndpoint.id.in_({r.endpoint_id for r in successes}),
                    WebhookEndpoint.failing_since.is_not(None),
                )
                .values(failing_since=None),
                execution_options={"synchronize_session": False},
            )
        failures = [r for r in results if not r.succeeded]
        if not failures:
            return
        deliveries = {
            d.id: d for d in session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.id.in_([r.delivery_id for r in failures]))
            )
        }
        for result in failures:
            delivery = deliveries.get(result.delivery_id)
            if delivery is None or delivery.status is not DeliveryStatus.DELIVERING or delivery.attempt_count != result.attempt:
                continue  # deleted with its endpoint, or this claim lapsed and another took over: that one decides
            endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
            assert endpoint is not None  # deliveries cascade with their endpoint
            _advance(session, settings, delivery, endpoint, result, now)


def _attempt_row(result: AttemptResult) -> dict[str, Any]:
    return {
        "id": new_id(),
        "delivery_id": result.delivery_id,
        "attempted_at": result.attempted_at,
        "duration_ms": result.duration_ms,
        "status_code": result.status_code,
        "response_excerpt": _storable(result.response_excerpt),
        "error": _storable(result.error[:MAX_ERROR_CHARS] if result.error else None),
    }


def _storable(text: str | None) -> str | None:
    # Receivers answer what they like; PostgreSQL text cannot hold NUL, and one unstorable excerpt
    # must not sink the batch it is recorded with.
    return text.replace("\x00", "\ufffd") if text is not None else None


def _advance(
    session: Session,
    settings: Settings,
    delivery: WebhookDelivery,
    endpoint: WebhookEndpoint,
    result: AttemptResult,
    now: datetime,
) -> None:
    delivery.updated_at = now
    if result.status_code == GONE:
        delivery.status, delivery.due_at = DeliveryStatus.FAILED, None
        disable_endpoint(session, endpoint, "the endpoint answered 410 Gone")
        return
    delay = next_delay(settings, delivery.attempt_count, result)
    if delay is None:
        delivery.status, delivery.due_at = DeliveryStatus.FAILED, None
    else:
        delivery.status, delivery.due_at = DeliveryStatus.PENDING, now + timedelta(seconds=delay)
    if endpoint.failing_since is None:
        endpoint.failing_since = result.attempted_at
    elif now - endpoint.failing_since >= timedelta(days=settings.webhook_disable_after_failing_days):
        disable_endpoint(
            session, endpoint, f"every delivery failed for {settings.webhook_disable_after_failing_days:g} days"
        )


def next_delay(settings: Settings, attempts_made: int, result: AttemptResult) -> float | None:
    """Seconds until the next attempt, or None when the schedule is used up. A 429 or 503 with
    Retry-After is retried when the receiver asked (at most a day later); it still uses an attempt."""
    schedule = settings.webhook_retry_schedule
    if attempts_made >= len(schedule):
        return None
    if result.status_code in RETRY_AFTER_STATUSES and result.retry_after_seconds is not None:
        return min(max(result.retry_after_seconds, 0.0), RETRY_AFTER_MAX_SECONDS)
    return schedule[attempts_made] * random.uniform(1.0, 1.0 + JITTER)


def disable_endpoint(session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = utcnow()
    record_event(
        session,
        EventType.ENDPOINT_DISABLED,
        EndpointDisabled(endpoint_id=endpoint.id, owner_id=endpoint.owner_id, url=endpoint.url, reason=reason),
        conversation_id=None,
        audience=[endpoint.owner_id] if endpoint.owner_id is not None else [],
    )
    log.warning("webhooks.endpoint_disabled", extra={"endpoint_id": endpoint.id, "reason": reason})
