"""HTTP shapes of the webhook routes: request bodies (unknown fields refused) and responses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from parley.api.schemas import Id, RequestBody, Text, WebUrl
from parley.events import PUBLIC_EVENT_TYPES
from parley.models import DeliveryStatus, WebhookEndpoint
from parley.services.webhook_matching import ALL_EVENTS
from parley.services.webhooks import DELIVERIES_DEFAULT_LIMIT, DELIVERIES_MAX_LIMIT, DeliveryRecord

# The event types an endpoint may ask for: the document lists them, the service refuses others
# (422 unknown_event_type).
EVENT_TYPE_CHOICES = sorted(t.value for t in PUBLIC_EVENT_TYPES) + [ALL_EVENTS]
EventTypes = Annotated[
    list[Annotated[str, Field(max_length=64, json_schema_extra={"enum": EVENT_TYPE_CHOICES})]],
    Field(min_length=1, max_length=50, description='Event types to receive, or ["*"] for all, including types added later.'),
]


class CreateWebhookBody(RequestBody):
    url: WebUrl
    description: Annotated[Text, Field(max_length=500)] | None = None
    event_types: EventTypes = ["*"]
    enabled: StrictBool = True


class UpdateWebhookBody(RequestBody):
    url: WebUrl | None = None
    description: Annotated[Text, Field(max_length=500)] | None = None
    event_types: EventTypes | None = None
    enabled: StrictBool | None = None


class DeliveriesQuery(RequestBody):
    before: Id | None = Field(default=None, description="Page back: deliveries older than this delivery id.")
    limit: Annotated[int, Field(ge=1, le=DELIVERIES_MAX_LIMIT)] = DELIVERIES_DEFAULT_LIMIT


# RFC 3339, what the document's `format: date-time` means: pydantic alone would also take other
# ISO 8601 forms and numbers (seconds since 1970).
RFC3339_DATE_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or not RFC3339_DATE_TIME.match(value):
        raise ValueError("must be an RFC 3339 date-time, e.g. 2026-11-21T12:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    # 0001-01-01T00:00:00+23:59 parses, but is before year 1 in UTC: refuse it here, not in the database.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


class ReplayQuery(RequestBody):
    since: Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)] = Field(
        description="Re-send every event since this time (RFC 3339, with a zone)."
    )


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    owner_id: str | None = Field(description="The owning user or bot; null for the admin's endpoints.")
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None = Field(description="Until then the previous secret also signs.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookOut:
        return cls.model_validate(endpoint)


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_...): shown now and at rotation only.")


class WebhookListOut(BaseModel):
    items: list[WebhookOut]


class SecretRotatedOut(BaseModel):
    id: str
    secret: str = Field(description="The new signing secret; the previous one keeps signing for 24 hours.")
    previous_secret_expires_at: datetime


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempted_at: datetime
    duration_ms: int | None
    status_code: int | None
    response_excerpt: str | None = Field(description="The start of the response body (PARLEY_WEBHOOK_RESPONSE_EXCERPT_BYTES).")
    error: str | None


class DeliveryOut(BaseModel):
    id: str = Field(description="The webhook-id header: the same for every attempt, retry and replay.")
    event_id: int
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None = Field(description="When pending: the next attempt.")
    created_at: datetime
    updated_at: datetime
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, record: DeliveryRecord) -> DeliveryOut:
        d = record.delivery
        return cls(
            id=d.id,
            event_id=d.event_id,
            event_type=d.event_type,
            status=d.status,
            attempt_count=d.attempt_count,
            next_attempt_at=d.due_at if d.status is DeliveryStatus.PENDING else None,
            created_at=d.created_at,
            updated_at=d.updated_at,
            attempts=[AttemptOut.model_validate(a) for a in record.attempts],
        )


class DeliveryListOut(BaseModel):
    items: list[DeliveryOut]


class QueuedOut(BaseModel):
    queued: int = Field(description="Deliveries now due.")

