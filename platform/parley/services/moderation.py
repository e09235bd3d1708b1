"""Reports and moderator tools: members report messages; the admin lists and resolves reports,
removes messages, suspends users, exports a conversation for a dispute; beat purges the text of
deleted messages once PARLEY_RETAIN_DELETED_DAYS have passed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from parley.config import Settings
from parley.db import reading, transaction
from parley.errors import Invalid, NotFound
from parley.events import EventType, MessageReported
from parley.ids import is_valid_id
from parley.models import Conversation, Message, Report, ReportStatus, User, utcnow
from parley.schemas import ConversationMembersOut, MessageOut, ReportOut, UserSummary
from parley.services.message_views import MESSAGE_COLUMNS, attachments_of, message_view, user_summaries
from parley.services.messages import remove_message_content
from parley.services.outbox import record_event
from parley.services.users import get_user

REMOVED_CONTENT = "This message was removed by a moderator"
REPORTS_DEFAULT_LIMIT = 50
REPORTS_MAX_LIMIT = 200


def _member_message(session: Session, message_id: str, member_id: str | None) -> tuple[Message, Conversation]:
    message = session.get(Message, message_id) if is_valid_id(message_id) else None
    conversation = session.get(Conversation, message.conversation_id) if message is not None else None
    if message is None or conversation is None or (member_id is not None and not conversation.has_member(member_id)):
        raise NotFound("no such message", details={"message_id": message_id})
    return message, conversation


def report_message(session: Session, reporter: User, message_id: str, reason: str) -> ReportOut:
    """A member of the message's conversation reports it; `message.reported` goes to the admin's
    webhooks (its audience is nobody: members' endpoints never see reports)."""
    if not reason.strip():
        raise Invalid("reason: must not be empty", details={"fields": [{"field": "reason", "message": "must not be empty"}]})
    with transaction(session):
        message, conversation = _member_message(session, message_id, reporter.id)
        report = Report(
            message_id=message.id, conversation_id=conversation.id, reporter_id=reporter.id, reason=reason,
            status=ReportStatus.OPEN, created_at=utcnow(),
        )
        session.add(report)
        session.flush()
        shown = ReportOut.model_validate(report)
        record_event(session, EventType.MESSAGE_REPORTED, MessageReported(report=shown), conversation_id=conversation.id, audience=[])
    return shown


def list_reports(
    session: Session, status: ReportStatus | None, *, before: str | None = None, limit: int = REPORTS_DEFAULT_LIMIT
) -> list[ReportOut]:
    """Reports, newest first."""
    query = select(Report).order_by(Report.id.desc()).limit(max(1, min(limit, REPORTS_MAX_LIMIT)))
    if status is not None:
        query = query.where(Report.status == status)
    if before is not None:
        query = query.where(Report.id < before)
    with reading(session):
        return [ReportOut.model_validate(r) for r in session.scalars(query)]


def resolve_report(session: Session, report_id: str, resolution: str | None) -> ReportOut:
    """Mark a report resolved (again: the first resolution stands)."""
    with transaction(session):
        report = session.get(Report, report_id, with_for_update=True) if is_valid_id(report_id) else None
        if report is None:
            raise NotFound("no such report", code="report_not_found", details={"report_id": report_id})
        if report.status != ReportStatus.RESOLVED:
            report.status = ReportStatus.RESOLVED
            report.resolution = resolution
            report.resolved_at = utcnow()
        session.flush()
        return ReportOut.model_validate(report)


def remove_message(session: Session, settings: Settings, message_id: str) -> MessageOut:
    """A moderator removes a message: both members see "This message was removed by a moderator",
    its attachments are removed. Removing a deleted or removed message changes nothing."""
    with transaction(session):
        message = session.scalar(select(Message).where(Message.id == message_id).with_for_update()) if is_valid_id(message_id) else None
        if message is None:
            raise NotFound("no such message", details={"message_id": message_id})
        conversation = session.get(Conversation, message.conversation_id)
        assert conversation is not None
        sender = user_summaries(session, [message.sender_id])[message.sender_id]
        if message.deleted_at is None:
            return remove_message_content(session, settings, message, conversation, REMOVED_CONTENT, sender)
        row = {column.key: getattr(message, column.key) for column in MESSAGE_COLUMNS}
        return message_view(row, sender, [])


def set_suspended(session: Session, user_id: str, suspended: bool) -> User:
    """Suspend a user (their tokens answer 401 suspended) or lift it. The API then drops their cached
    credentials and closes their WebSockets on every node."""
    with transaction(session):
        user = get_user(session, user_id)
        if suspended and user.suspended_at is None:
            user.suspended_at = utcnow()
        elif not suspended:
            user.suspended_at = None
        session.flush()
        return user


@dataclass(frozen=True)
class ExportedMessage:
    message: MessageOut
    original_content: str | None


@dataclass(frozen=True)
class Export:
    conversation: ConversationMembersOut
    messages: list[ExportedMessage]
    reports: list[ReportOut]
    exported_at: datetime


def export_conversation(session: Session, conversation_id: str) -> Export:
    """The whole history for a dispute: every message as the members saw it, with what the sender
    wrote where it was masked, or deleted while PARLEY_RETAIN_DELETED_DAYS keeps it; and the
    conversation's reports."""
    with reading(session):
        conversation = session.get(Conversation, conversation_id) if is_valid_id(conversation_id) else None
        if conversation is None:
            raise NotFound("no such conversation", details={"conversation_id": conversation_id})
        members = user_summaries(session, list(conversation.member_ids))
        initiator = session.get(User, conversation.initiator_id)
        recipient = session.get(User, conversation.recipient_id)
        assert initiator is not None and recipient is not None
        rows = session.execute(
            select(*MESSAGE_COLUMNS).where(Message.conversation_id == conversation.id).order_by(Message.id)
        ).all()
        attachments = attachments_of(session, [row.id for row in rows])
        messages = [
            ExportedMessage(
                message_view(row, members.get(row.sender_id) or UserSummary(id=row.sender_id, username="", name="", avatar_url=None),
                             attachments.get(row.id, [])),
                row.original_content,
            )
            for row in rows
        ]
        reports = [
            ReportOut.model_validate(r)
            for r in session.scalars(select(Report).where(Report.conversation_id == conversation.id).order_by(Report.id))
        ]
        shown = ConversationMembersOut.of(conversation, initiator, recipient)
    return Export(conversation=shown, messages=messages, reports=reports, exported_at=utcnow())


def purge_retained(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Beat's purge: the kept text of messages deleted more than PARLEY_RETAIN_DELETED_DAYS ago goes
    for good (all of it when retention is off). Returns how many messages were purged."""
    cutoff = (now or utcnow()) - timedelta(days=settings.retain_deleted_days)
    with transaction(session):
        result = session.execute(
            update(Message)
            .where(Message.deleted_at.is_not(None), Message.deleted_at <= cutoff, Message.original_content.is_not(None))
            .values(original_content=None)
            .execution_options(synchronize_session=False)
        )
    return int(result.rowcount or 0)
