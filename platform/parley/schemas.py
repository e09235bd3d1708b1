"""The shapes Parley shows the world: HTTP responses and event payloads use these same models, so
a message looks alike on the REST API, a WebSocket, a webhook and in a Slack mirror."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from parley.models import (
    AttachmentKind,
    AttachmentStatus,
    Conversation,
    EmailDigest,
    MessageSource,
    ReportStatus,
    User,
    UserKind,
    Weekday,
)


class Shape(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class UserSummary(Shape):
    id: str
    username: str
    name: str
    avatar_url: str | None


class UserOut(UserSummary):
    kind: UserKind
    created_at: datetime


class UserPrivateOut(UserOut):
    """What a user sees of themselves and what the admin sees: contact details included."""

    email: str | None


class NotificationSettingsOut(Shape):
    inbox_notifications: bool
    order_updates_notifications: bool
    email_digest: EmailDigest
    timezone: str
    digest_hour: int
    digest_weekday: Weekday


class ThumbnailOut(Shape):
    size: int  # the long side it was made for (320, 1280)
    width: int
    height: int
    url: str


class AttachmentOut(Shape):
    """An attachment as a message shows it. Uploads have `url` /api/v1/attachments/{id}/content and
    are `processing` until a media worker has made them `ready` (or `failed`); external attachments
    (`{name, url}` given by the sender) are always `ready`."""

    id: str
    name: str
    url: str
    kind: AttachmentKind
    content_type: str
    size: int | None
    status: AttachmentStatus = AttachmentStatus.READY
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    thumbnails: list[ThumbnailOut] = []


class UploadOut(AttachmentOut):
    """An attachment's full metadata (GET /attachments/{id}, upload responses, attachment events)."""

    uploader_id: str | None
    message_id: str | None
    conversation_id: str | None
    codec: str | None
    failure_reason: str | None
    created_at: datetime | None


class MessageOut(Shape):
    id: str
    conversation_id: str
    sender_id: str
    sender: UserSummary
    content: str
    attachments: list[AttachmentOut]
    created_at: datetime
    updated_at: datetime
    read_at: datetime | None
    deleted_at: datetime | None
    client_id: str | None
    source: MessageSource
    # "contact_info": contact details were hidden in `content` (PARLEY_CONTACT_INFO=mask).
    flags: list[str] = []


class ReportOut(Shape):
    id: str
    message_id: str
    conversation_id: str
    reporter_id: str
    reason: str
    status: ReportStatus
    resolution: str | None
    created_at: datetime
    resolved_at: datetime | None


class ConversationCore(Shape):
    id: str
    initiator_id: str
    recipient_id: str
    created_at: datetime
    updated_at: datetime


class ConversationOut(ConversationCore):
    """A conversation as one member sees it (an inbox item)."""

    other_user: UserSummary
    last_message: MessageOut | None
    unread_count: int
    # Whether the conversation policy lets the viewer send here now (clients grey out the input).
    can_send: bool = True
    cannot_send_reason: str | None = None


class ConversationMembersOut(ConversationCore):
    """A conversation as neither member in particular sees it (event payloads)."""

    initiator: UserSummary
    recipient: UserSummary

    @classmethod
    def of(cls, conversation: Conversation, initiator: User, recipient: User) -> ConversationMembersOut:
        return cls(
            **ConversationCore.model_validate(conversation).model_dump(),
            initiator=UserSummary.model_validate(initiator),
            recipient=UserSummary.model_validate(recipient),
        )
