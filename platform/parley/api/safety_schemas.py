"""Request bodies and responses of the safety routes: relationships, blocks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field, StrictBool, field_validator

from parley.api.schemas import Id, RequestBody, Text
from parley.models import Relationship, ReportStatus
from parley.schemas import ConversationMembersOut, MessageOut, ReportOut, UserSummary
from parley.services.moderation import REPORTS_DEFAULT_LIMIT, REPORTS_MAX_LIMIT

REFERENCE_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
REFERENCE_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": REFERENCE_PATTERN}


class RelationshipBody(RequestBody):
    user_ids: Annotated[list[Id], Field(min_length=2, max_length=2, json_schema_extra={"uniqueItems": True})] = Field(
        description="The two users the relationship is between."
    )
    active: StrictBool = True
    expires_at: AwareDatetime | None = Field(default=None, description="After this time the relationship no longer counts.")

    @field_validator("user_ids")
    @classmethod
    def _two_different(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must be two different users")
        return value


class RelationshipOut(BaseModel):
    reference: str
    user_ids: list[str]
    active: bool
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, relationship: Relationship) -> RelationshipOut:
        return cls(
            reference=relationship.reference,
            user_ids=[relationship.user_low_id, relationship.user_high_id],
            active=relationship.active,
            expires_at=relationship.expires_at,
            created_at=relationship.created_at,
            updated_at=relationship.updated_at,
        )


class RelationshipListOut(BaseModel):
    items: list[RelationshipOut]


class RelationshipQuery(RequestBody):
    user_id: Id | None = Field(default=None, description="Only this user's relationships.")


class BlockListOut(BaseModel):
    items: list[UserSummary]


# --- reports and moderators ------------------------------------------------------------------------


class ReportBody(RequestBody):
    reason: Annotated[Text, Field(min_length=1, max_length=1000, json_schema_extra={"pattern": r"^[^\u0000]*\S[^\u0000]*$"})]

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class ResolveReportBody(RequestBody):
    resolution: Annotated[Text, Field(min_length=1, max_length=1000)] | None = None


class ReportsQuery(RequestBody):
    status: ReportStatus | None = Field(default=None, description="Only reports in this status.")
    before: Id | None = Field(default=None, description="Page back: reports older than this report id.")
    limit: Annotated[int, Field(ge=1, le=REPORTS_MAX_LIMIT)] = REPORTS_DEFAULT_LIMIT


class ReportListOut(BaseModel):
    items: list[ReportOut]


class SuspensionOut(BaseModel):
    user_id: str
    suspended: bool
    suspended_at: datetime | None


class ExportedMessageOut(MessageOut):
    original_content: str | None = Field(
        description="What the sender wrote, where it differs from `content`: masked contact details, or a "
        "deleted message's text while PARLEY_RETAIN_DELETED_DAYS keeps it."
    )


class ExportOut(BaseModel):
    conversation: ConversationMembersOut
    messages: list[ExportedMessageOut]
    reports: list[ReportOut]
    exported_at: datetime
