"""Delivery state in the database, on both databases: fan-out, claims (per-endpoint cap, lapsed
leases), and what each recorded answer does (the schedule, 410, stale records)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.models import DeliveryStatus, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from parley.outbox.receipts import consume_once
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.messages import MessageDraft, send_message
from parley.services.webhook_deliveries import (
    LOST_ATTEMPT,
    AttemptResult,
    ClaimedDelivery,
    claim_due,
    record_attempts,
)
from parley.services.webhooks import EndpointDraft, create_endpoint, rotate_secret
from tests.services.conftest import MakeUser
from workers.webhook_tasks import WEBHOOK_CONSUMER


@pytest.fixture
def tuned(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_max_in_flight_per_endpoint": 3, "webhook_retry_schedule": [0.0, 5.0, 1.0]})


@pytest.fixture
def sync_sessions(tuned: Settings) -> Iterator[sessionmaker[Session]]:
    engine = create_sync_db_engine(tuned)
    yield sync_session_factory(engine)
    engine.dispose()


async def _endpoints_with_deliveries(
    sessions: sessionmaker[Session], sync_sessions: sessionmaker[Session], settings: Settings,
    make_user: MakeUser, endpoints: int, messages: int,
) -> list[str]:
    """Endpoints of alice's, and `messages` messages fanned out to them; returns the endpoint ids."""
    alice, bob = make_user("alice"), make_user("bob")
    ids = []
    with sessions() as session:
        for n in range(endpoints):
            draft = EndpointDraft(url=f"https://8.8.8.8/hook/{n}", event_types=("message.created",))
            ids.append((create_endpoint(session, settings, alice.id, draft)).endpoint.id)
        conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
        for n in range(messages):
            send_message(session, settings, alice, conversation.id, MessageDraft(content=f"m{n}"))
    with sync_sessions() as session:
        events = session.scalars(select(Event.id).order_by(Event.id)).all()
    for event_id in events:
        consume_once(sync_sessions, WEBHOOK_CONSUMER, event_id)
        consume_once(sync_sessions, WEBHOOK_CONSUMER, event_id)  # a redelivered task adds nothing
    return ids


def _result(claimed: ClaimedDelivery, status: int | None, **extra: object) -> AttemptResult:
    return AttemptResult(claimed.delivery_id, claimed.endpoint_id, claimed.attempt, utcnow(), 5, status, **extra)  # type: ignore[arg-type]


def _delivery(sync_sessions: sessionmaker[Session], delivery_id: str) -> WebhookDelivery:
    with sync_sessions() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        return delivery


def _make_due(sync_sessions: sessionmaker[Session], delivery_id: str) -> None:
    with sync_sessions() as session, session.begin():
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(due_at=utcnow() - timedelta(seconds=1))
        )


async def test_fan_out_is_once_per_endpoint_and_claims_respect_each_endpoints_cap(
    sessions: sessionmaker[Session], sync_sessions: sessionmaker[Session], tuned: Settings, make_user: MakeUser
) -> None:
    endpoints = await _endpoints_with_deliveries(sessions, sync_sessions, tuned, make_user, endpoints=2, messages=5)
    with sync_sessions() as session:
        assert len(session.scalars(select(WebhookDelivery.id)).all()) == 10  # message.created only, once each

    first = claim_due(sync_sessions, tuned, limit=100)
    assert sorted(c.endpoint_id for c in first.deliveries) == sorted(endpoints * 3)
    assert claim_due(sync_sessions, tuned, limit=100).deliveries == []  # both endpoints are at their cap

    binary = "\x00\x01 not text"  # whatever a receiver answers is logged
    record_attempts(sync_sessions, tuned, [_result(first.deliveries[0], 200, response_excerpt=binary)])
    [freed] = claim_due(sync_sessions, tuned, limit=100).deliveries
    assert freed.endpoint_id == first.deliveries[0].endpoint_id
    assert b'"type":"message.created"' in freed.body and len(freed.secrets) == 1
    with sync_sessions() as session:
        assert session.scalars(select(WebhookAttempt.response_excerpt)).one() == "\ufffd\x01 not text"


async def test_a_lapsed_claim_is_taken_again_and_only_the_new_claim_decides(
    sessions: sessionmaker[Session], sync_sessions: sessionmaker[Session], tuned: Settings, make_user: MakeUser
) -> None:
    await _endpoints_with_deliveries(sessions, sync_sessions, tuned, make_user, endpoints=1, messages=1)
    [lost] = claim_due(sync_sessions, tuned, limit=1).deliveries
    _make_due(sync_sessions, lost.delivery_id)  # the worker died: its lease ran out

    [again] = claim_due(sync_sessions, tuned, limit=1).deliveries
    assert (again.delivery_id, again.attempt) == (lost.delivery_id, 2)
    record_attempts(sync_sessions, tuned, [_result(lost, 500, error="HTTP 500")])  # the old claim's late answer: logged only
    assert _delivery(sync_sessions, lost.delivery_id).status is DeliveryStatus.DELIVERING
    record_attempts(sync_sessions, tuned, [_result(again, 204)])
    assert _delivery(sync_sessions, lost.delivery_id).status is DeliveryStatus.SUCCEEDED
    with sync_sessions() as session:
        log = session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()
    assert [(a.status_code, a.error) for a in log] == [(None, LOST_ATTEMPT), (500, "HTTP 500"), (204, None)]


async def test_failures_follow_the_schedule_then_the_delivery_fails(
    sessions: sessionmaker[Session], sync_sessions: sessionmaker[Session], tuned: Settings, make_user: MakeUser
) -> None:
    [endpoint_id] = await _endpoints_with_deliveries(sessions, sync_sessions, tuned, make_user, endpoints=1, messages=1)
    delays = []
    for _ in range(3):
        [claimed] = claim_due(sync_sessions, tuned, limit=1).deliveries
        before = utcnow()
        record_attempts(sync_sessions, tuned, [_result(claimed, 500, error="HTTP 500")])
        delivery = _delivery(sync_sessions, claimed.delivery_id)
        if delivery.due_at is not None:
            delays.append((delivery.due_at - before).total_seconds())
            _make_due(sync_sessions, claimed.delivery_id)
    assert delivery.status is DeliveryStatus.FAILED and delivery.attempt_count == 3
    assert 5 <= delays[0] <= 5.6 and 1 <= delays[1] <= 1.2  # the schedule, with up to 10% jitter
    with sync_sessions() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None and endpoint.enabled and endpoint.failing_since is not None


async def test_a_429_waits_as_asked_and_a_410_disables_the_endpoint_with_an_event(
    sessions: sessionmaker[Session], sync_sessions: sessionmaker[Session], tuned: Settings, make_user: MakeUser
) -> None:
    ids = await _endpoints_with_deliveries(sessions, sync_sessions, tuned, make_user, endpoints=2, messages=1)
    busy, gone = sorted(claim_due(sync_sessions, tuned, limit=10).deliveries, key=lambda c: ids.index(c.endpoint_id))
    before = utcnow()
    record_attempts(sync_sessions, tuned, [_result(busy, 429, retry_after_seconds=120.0), _result(gone, 410)])

    waiting = _delivery(sync_sessions, busy.delivery_id)
    assert waiting.status is DeliveryStatus.PENDING and waiting.due_at is not None
    assert (waiting.due_at - before).total_seconds() >= 120
    assert _delivery(sync_sessions, gone.delivery_id).status is DeliveryStatus.FAILED
    with sync_sessions() as session:
        endpoint = session.get(WebhookEndpoint, gone.endpoint_id)
        assert endpoint is not None and not endpoint.enabled and "410" in (endpoint.disabled_reason or "")
        [announced] = session.scalars(select(Event).where(Event.type == "endpoint.disabled")).all()
    assert announced.payload["endpoint_id"] == gone.endpoint_id


async def test_a_rotated_out_secret_stops_signing_after_its_overlap(
    sessions: sessionmaker[Session], sync_sessions: sessionmaker[Session], tuned: Settings, make_user: MakeUser
) -> None:
    [endpoint_id] = await _endpoints_with_deliveries(sessions, sync_sessions, tuned, make_user, endpoints=1, messages=2)
    with sessions() as session:
        rotated = rotate_secret(session, tuned, _owner_of(sync_sessions, endpoint_id), endpoint_id)
    first = claim_due(sync_sessions, tuned, limit=1).deliveries[0]
    assert first.secrets[0] == rotated.secret and len(first.secrets) == 2  # both sign during the overlap
    with sync_sessions() as session, session.begin():
        session.execute(
            update(WebhookEndpoint).values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
    second = claim_due(sync_sessions, tuned, limit=1).deliveries[0]
    assert second.secrets == (rotated.secret,)


def _owner_of(sync_sessions: sessionmaker[Session], endpoint_id: str) -> str | None:
    with sync_sessions() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        return endpoint.owner_id
