"""Event types and their payloads: the one vocabulary that the WebSocket, webhooks, Slack, email
and bots share. Services write these into the outbox (`events` table) in the transaction that
made the change; consumers read them after commit."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel

from parley.schemas import ConversationMembersOut, MessageOut, ReportOut, UploadOut


class EventType(enum.StrEnum):
    CONVERSATION_CREATED = "conversation.created"
    MESSAGE_CREATED = "message.created"
    MESSAGE_READ = "message.read"
    MESSAGE_DELETED = "message.deleted"
    # Internal: a file was uploaded; the media consumer starts its processing.
    ATTACHMENT_UPLOADED = "attachment.uploaded"
    ATTACHMENT_READY = "attachment.ready"
    ATTACHMENT_FAILED = "attachment.failed"
    # Internal: uploads left with their message or never attached; their stored files go next.
    ATTACHMENT_DELETED = "attachment.deleted"
    # Who may talk changed for a pair (a relationship ended or began): clients grey out the input.
    CONVERSATION_POLICY_CHANGED = "conversation.policy_changed"
    # A member reported a message: for the admin's webhooks (its audience is nobody).
    MESSAGE_REPORTED = "message.reported"
    WEBHOOK_TEST = "webhook.test"
    ENDPOINT_DISABLED = "endpoint.disabled"


class ConversationCreated(BaseModel):
    conversation: ConversationMembersOut


class MessageCreated(BaseModel):
    message: MessageOut


class MessageDeleted(BaseModel):
    message: MessageOut


class MessageRead(BaseModel):
    """`reader_id` read every message of the other member up to and including `up_to_message_id`;
    `count` of them were unread until now and carry `read_at` from this moment."""

    conversation_id: str
    reader_id: str
    up_to_message_id: str | None
    read_at: datetime
    count: int


class AttachmentUploaded(BaseModel):
    attachment: UploadOut


class AttachmentProcessed(BaseModel):
    """attachment.ready and attachment.failed: what processing found (dimensions, thumbnails) or
    why it failed (`failure_reason`)."""

    attachment: UploadOut


class AttachmentsDeleted(BaseModel):
    """Uploaded attachments whose rows are gone; their stored files and thumbnails are removed next."""

    attachment_ids: list[str]
    message_id: str | None = None


class ConversationPolicyChanged(BaseModel):
    """Whether the conversation's members may send changed (PARLEY_CONVERSATION_POLICY=relationships:
    their last relationship ended, or one began again). History stays readable unless
    PARLEY_POLICY_READ_AFTER_END=false."""

    conversation_id: str
    can_send: bool
    cannot_send_reason: str | None = None


class MessageReported(BaseModel):
    report: ReportOut


class WebhookTest(BaseModel):
    """Sent by `POST /webhooks/{id}/test`, to that endpoint only."""

    endpoint_id: str
    owner_id: str | None  # None: the admin's endpoint


class EndpointDisabled(BaseModel):
    """Parley stopped delivering to a webhook endpoint: it answered 410 Gone, or every delivery
    failed for PARLEY_WEBHOOK_DISABLE_AFTER_FAILING_DAYS. Goes to its owner's other endpoints and
    the admin's."""

    endpoint_id: str
    owner_id: str | None
    url: str
    reason: str


PAYLOADS: dict[EventType, type[BaseModel]] = {
    EventType.CONVERSATION_CREATED: ConversationCreated,
    EventType.MESSAGE_CREATED: MessageCreated,
    EventType.MESSAGE_DELETED: MessageDeleted,
    EventType.MESSAGE_READ: MessageRead,
    EventType.ATTACHMENT_UPLOADED: AttachmentUploaded,
    EventType.ATTACHMENT_READY: AttachmentProcessed,
    EventType.ATTACHMENT_FAILED: AttachmentProcessed,
    EventType.ATTACHMENT_DELETED: AttachmentsDeleted,
    EventType.CONVERSATION_POLICY_CHANGED: ConversationPolicyChanged,
    EventType.MESSAGE_REPORTED: MessageReported,
    EventType.WEBHOOK_TEST: WebhookTest,
    EventType.ENDPOINT_DISABLED: EndpointDisabled,
}


# Parley's own bookkeeping between its services and workers: never shown to receivers outside.
INTERNAL_EVENT_TYPES: frozenset[EventType] = frozenset({EventType.ATTACHMENT_UPLOADED, EventType.ATTACHMENT_DELETED})
# What webhooks may subscribe to and receive.
PUBLIC_EVENT_TYPES: frozenset[EventType] = frozenset(EventType) - INTERNAL_EVENT_TYPES

# What members of a conversation see live (WebSocket) and on replay. Events of other types are for
# back ends only (webhooks, workers).
LIVE_EVENT_TYPES: frozenset[EventType] = frozenset(
    {
        EventType.CONVERSATION_CREATED,
        EventType.CONVERSATION_POLICY_CHANGED,
        EventType.MESSAGE_CREATED,
        EventType.MESSAGE_READ,
        EventType.MESSAGE_DELETED,
        EventType.ATTACHMENT_READY,
        EventType.ATTACHMENT_FAILED,
    }
)


def parse_payload(event_type: str, payload: dict[str, object]) -> BaseModel:
    return PAYLOADS[EventType(event_type)].model_validate(payload)
