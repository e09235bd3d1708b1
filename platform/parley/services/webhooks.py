"""Webhook endpoints: registration, ownership, signing secrets, tests, the delivery log, retries
and replays. Delivery itself (the HTTP call) is the workers' (webhooks/ and
parley.services.webhook_deliveries); this module only writes what they act on.

Ownership: `owner_id` None is the admin (the host product), whose endpoints receive every
conversation's events; otherwise a user or bot, whose endpoints receive the events of the
conversations it is in. Each sees and changes only its own endpoints: anyone else's is not found.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import reading, transaction
from parley.errors import Conflict, Invalid, NotFound
from parley.events import PUBLIC_EVENT_TYPES, EventType, WebhookTest
from parley.ids import is_valid_id
from parley.models import (
    audience_includes,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from parley.secret_box import secret_box
from parley.services.outbox import record_event
from parley.services.webhook_matching import ALL_EVENTS, EventFacts, delivery_rows, schedule_statement

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)
MAX_ENDPOINTS_PER_OWNER = 100
DELIVERIES_DEFAULT_LIMIT = 50
DELIVERIES_MAX_LIMIT = 200
REPLAY_MAX_EVENTS = 10_000

@dataclass(frozen=True)
class EndpointDraft:
    url: str
    description: str | None = None
    event_types: tuple[str, ...] = (ALL_EVENTS,)
    enabled: bool = True


@dataclass(frozen=True)
class EndpointChange:
    url: str | None = None
    description: str | None = None
    event_types: tuple[str, ...] | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class EndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str  # shown at creation and rotation only


@dataclass(frozen=True)
class DeliveryRecord:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def check_event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    known = {t.value for t in PUBLIC_EVENT_TYPES}
    unknown = sorted(set(event_types) - known - {ALL_EVENTS})
    if not event_types or unknown:
        raise Invalid(
            "event_types: give known event types, or [\"*\"] for all",
            code="unknown_event_type",
            details={"unknown": unknown, "known": sorted(known)},
        )
    return (ALL_EVENTS,) if ALL_EVENTS in event_types else tuple(dict.fromkeys(event_types))


def create_endpoint(session: Session, settings: Settings, owner_id: str | None, draft: EndpointDraft) -> EndpointWithSecret:
    """`draft.url` has passed the SSRF guard (webhooks.ssrf.UrlGuard): the caller runs it, since it
    resolves the host, which is network I/O."""
    event_types = check_event_types(draft.event_types)
    secret = new_signing_secret()
    with transaction(session):
        owned = session.scalars(select(WebhookEndpoint.id).where(_owned_by(owner_id)))
        if len(owned.all()) >= MAX_ENDPOINTS_PER_OWNER:
            raise Invalid(f"at most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints each", code="too_many_webhooks")
        now = utcnow()
        endpoint = WebhookEndpoint(
            owner_id=owner_id,
            url=draft.url,
            description=draft.description,
            event_types=list(event_types),
            enabled=draft.enabled,
            secret_encrypted=secret_box(settings).encrypt(secret),
            created_at=now,
            updated_at=now,
        )
        session.add(endpoint)
    return EndpointWithSecret(endpoint, secret)


def list_endpoints(session: Session, owner_id: str | None) -> list[WebhookEndpoint]:
    with reading(session):
        result = session.scalars(select(WebhookEndpoint).where(_owned_by(owner_id)).order_by(WebhookEndpoint.id))
        return list(result)


def get_endpoint(session: Session, owner_id: str | None, endpoint_id: str) -> WebhookEndpoint:
    with reading(session):
        return _owned_endpoint(session, owner_id, endpoint_id)


def update_endpoint(session: Session, owner_id: str | None, endpoint_id: str, change: EndpointChange) -> WebhookEndpoint:
    """A new `change.url` has passed the SSRF guard (see create_endpoint)."""
    event_types = check_event_types(change.event_types) if change.event_types is not None else None
    with transaction(session):
        endpoint = _owned_endpoint(session, owner_id, endpoint_id)
        if change.url is not None:
            endpoint.url = change.url
        if change.description is not None:
            endpoint.description = change.description
        if event_types is not None:
            endpoint.event_types = list(event_types)
        if change.enabled is not None:
            endpoint.enabled = change.enabled
            if change.enabled:
                # Re-enabled by its owner: the failing clock starts again.
                endpoint.disabled_reason = None
                endpoint.failing_since = None
        endpoint.updated_at = utcnow()
    return endpoint


def delete_endpoint(session: Session, owner_id: str | None, endpoint_id: str) -> None:
    with transaction(session):
        endpoint = _owned_endpoint(session, owner_id, endpoint_id)
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id))


def rotate_secret(
    session: Session, settings: Settings, owner_id: str | None, endpoint_id: str
) -> EndpointWithSecret:
    """A new secret signs from now on; the current one keeps signing beside it for 24 hours so
    receivers can switch without losing a delivery. A second rotation within the overlap drops the
    oldest."""
    secret = new_signing_secret()
    with transaction(session):
        endpoint = _owned_endpoint(session, owner_id, endpoint_id)
        now = utcnow()
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
        endpoint.secret_encrypted = secret_box(settings).encrypt(secret)
        endpoint.updated_at = now
    return EndpointWithSecret(endpoint, secret)


def send_test(session: Session, owner_id: str | None, endpoint_id: str) -> None:
    with transaction(session):
        endpoint = _enabled_endpoint(session, owner_id, endpoint_id)
        record_event(
            session,
            EventType.WEBHOOK_TEST,
            WebhookTest(endpoint_id=endpoint.id, owner_id=endpoint.owner_id),
            conversation_id=None,
            audience=owner_audience(endpoint.owner_id),
        )


def list_deliveries(
    session: Session, owner_id: str | None, endpoint_id: str, *, before: str | None, limit: int
) -> list[DeliveryRecord]:
    """Newest first, `before` a delivery id pages back."""
    with reading(session):
        endpoint = _owned_endpoint(session, owner_id, endpoint_id)
        query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        if before is not None:
            query = query.where(WebhookDelivery.id < before)
        deliveries = list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))
        attempts = session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.id)
        )
        by_delivery: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
        for attempt in attempts:
            by_delivery[attempt.delivery_id].append(attempt)
    return [DeliveryRecord(d, by_delivery[d.id]) for d in deliveries]


def retry_delivery(session: Session, owner_id: str | None, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    """Deliver again now, with a full set of attempts (the same webhook-id). One being delivered
    right now is left to finish."""
    with transaction(session):
        endpoint = _enabled_endpoint(session, owner_id, endpoint_id)
        delivery = session.get(WebhookDelivery, delivery_id) if is_valid_id(delivery_id) else None
        if delivery is None or delivery.endpoint_id != endpoint.id:
            raise NotFound("no such delivery", code="delivery_not_found", details={"delivery_id": delivery_id})
        now = utcnow()
        row = {"id": delivery.id, "endpoint_id": endpoint.id, "event_id": delivery.event_id,
               "event_type": delivery.event_type, "status": delivery.status, "due_at": now,
               "attempt_count": 0, "created_at": now, "updated_at": now}
        session.execute(schedule_statement(session.get_bind().dialect.name, again=True), [row])
        session.refresh(delivery)
    return delivery


def replay(session: Session, owner_id: str | None, endpoint_id: str, since: datetime) -> int:
    """Send again every event since `since` that this endpoint takes (at most REPLAY_MAX_EVENTS,
    oldest first); events it never had are delivered for the first time. Test pings are not
    replayed. Returns how many."""
    with transaction(session):
        endpoint = _enabled_endpoint(session, owner_id, endpoint_id)
        query = (
            select(Event)
            .where(Event.created_at >= since, Event.type != EventType.WEBHOOK_TEST.value)
            .order_by(Event.id)
            .limit(REPLAY_MAX_EVENTS)
        )
        if owner_id is not None:
            query = query.where(audience_includes(owner_id))  # what concerned the owner
        now = utcnow()
        rows = [
            row
            for event in session.scalars(query)
            for row in delivery_rows(
                [endpoint], EventFacts(event.id, event.type, event.payload, frozenset(event.audience)), now
            )
        ]
        if rows:
            session.execute(schedule_statement(session.get_bind().dialect.name, again=True), rows)
    return len(rows)


def owner_audience(owner_id: str | None) -> list[str]:
    """An endpoint's events concern its owner; the admin (None) is nobody's user."""
    return [owner_id] if owner_id is not None else []


def _owned_by(owner_id: str | None) -> ColumnElement[bool]:
    return WebhookEndpoint.owner_id.is_(None) if owner_id is None else WebhookEndpoint.owner_id == owner_id


def _owned_endpoint(session: Session, owner_id: str | None, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id) if is_valid_id(endpoint_id) else None
    if endpoint is None or endpoint.owner_id != owner_id:
        raise NotFound("no such webhook", code="webhook_not_found", details={"webhook_id": endpoint_id})
    return endpoint


def _enabled_endpoint(session: Session, owner_id: str | None, endpoint_id: str) -> WebhookEndpoint:
    """For sending now (test, retry, replay): nothing goes to a disabled endpoint, so say so rather
    than accept work that would wait until someone enables it."""
    endpoint = _owned_endpoint(session, owner_id, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            "the webhook is disabled; enable it first",
            code="webhook_disabled",
            details={"webhook_id": endpoint.id, "disabled_reason": endpoint.disabled_reason},
        )
    return endpoint
