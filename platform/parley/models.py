"""Parley's tables as SQLAlchemy 2 typed models. Alembic migrations in parley/migrations mirror
them; tests/test_migrations.py proves the two agree."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from parley.ids import new_id

ID = String(26)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are UTC and timezone-aware in Python on both databases. SQLite has no time zone
    type, so values are stored as naive UTC and given their zone back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _str_enum(enum_cls: type[enum.StrEnum], length: int = 16) -> SAEnum:
    # Stored as plain strings with a CHECK constraint, identical on PostgreSQL and SQLite.
    return SAEnum(
        enum_cls,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class UserKind(enum.StrEnum):
    USER = "user"
    BOT = "bot"


class EmailDigest(enum.StrEnum):
    OFF = "off"
    DAILY = "daily"
    WEEKLY = "weekly"


class Weekday(enum.StrEnum):
    """A weekly digest's day (the user's local day)."""

    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


class MessageSource(enum.StrEnum):
    API = "api"
    SLACK = "slack"
    EMAIL = "email"
    BOT = "bot"
    WEBHOOK = "webhook"


class AttachmentKind(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    DOCUMENT = "document"


class AttachmentStatus(enum.StrEnum):
    PROCESSING = "processing"  # uploaded; a media worker has yet to finish with it
    READY = "ready"
    FAILED = "failed"  # corrupt, a decompression bomb, ...: see failure_reason


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _first_digest_at(context: Any) -> datetime | None:
    """A new user's next_digest_at, from the row's own digest settings (or their defaults)."""
    from parley.digest_times import next_digest_at

    params = context.get_current_parameters()
    return next_digest_at(
        utcnow(),
        enabled=_digest_enabled(params),
        frequency=params.get("email_digest") or EmailDigest.DAILY,
        zone=params.get("timezone") or DEFAULT_TIMEZONE,
        hour=params.get("digest_hour") if params.get("digest_hour") is not None else DEFAULT_DIGEST_HOUR,
        weekday=params.get("digest_weekday") or DEFAULT_DIGEST_WEEKDAY,
    )


def _digest_enabled(params: dict[str, Any]) -> bool:
    kind = params.get("kind") or UserKind.USER
    return bool(params.get("email")) and str(kind) == UserKind.USER.value and str(
        params.get("email_digest") or EmailDigest.DAILY
    ) != EmailDigest.OFF.value


DEFAULT_TIMEZONE = "UTC"
DEFAULT_DIGEST_HOUR = 8
DEFAULT_DIGEST_WEEKDAY = Weekday.MONDAY


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Usernames are ASCII (see schemas), so lower() folds them the same on both databases.
        Index("uq_users_username_lower", func.lower(text("username")), unique=True),
        # The due-digest sweep reads due users straight off this index: its cost follows the number
        # of due users, not of all users.
        Index(
            "ix_users_next_digest_at",
            "next_digest_at",
            postgresql_where=text("next_digest_at IS NOT NULL"),
            sqlite_where=text("next_digest_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    kind: Mapped[UserKind] = mapped_column(_str_enum(UserKind), default=UserKind.USER)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    inbox_notifications: Mapped[bool] = mapped_column(Boolean, default=True)
    order_updates_notifications: Mapped[bool] = mapped_column(Boolean, default=True)
    email_digest: Mapped[EmailDigest] = mapped_column(_str_enum(EmailDigest), default=EmailDigest.DAILY)
    # Set by a moderator (POST /admin/users/{id}/suspend): the user's tokens answer 401 suspended.
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)  # IANA name
    digest_hour: Mapped[int] = mapped_column(Integer, default=DEFAULT_DIGEST_HOUR)  # 0-23, local
    digest_weekday: Mapped[Weekday] = mapped_column(_str_enum(Weekday), default=DEFAULT_DIGEST_WEEKDAY)
    # When the next digest is due (UTC), recomputed from the four settings above whenever they change
    # and after every digest run; NULL when no digest is wanted (off, no email address, a bot).
    next_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=_first_digest_at)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the token: tokens are 256 random bits, so a fast hash is as strong as a slow one
    # and lets a request find its token with one indexed lookup.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="raise")


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # The inbox reads each side's conversations newest first straight off these indexes.
        Index("ix_conversations_initiator_activity", "initiator_id", "updated_at", "id"),
        Index("ix_conversations_recipient_activity", "recipient_id", "updated_at", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    # "<smaller user id>:<larger user id>": the database's unique constraint is what guarantees one
    # conversation per unordered pair, even when many requests race to create it.
    pair_key: Mapped[str] = mapped_column(String(53), unique=True)
    initiator_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    recipient_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    members: Mapped[list[ConversationMember]] = relationship(lazy="raise", back_populates="conversation")

    @staticmethod
    def pair_key_for(user_a: str, user_b: str) -> str:
        low, high = sorted((user_a, user_b))
        return f"{low}:{high}"

    def has_member(self, user_id: str) -> bool:
        return user_id in self.member_ids

    @property
    def member_ids(self) -> tuple[str, str]:
        """Who the conversation's events concern: its audience."""
        return (self.initiator_id, self.recipient_id)


class ConversationMember(Base):
    """Per-member read state of a conversation."""

    __tablename__ = "conversation_members"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_read_message_id: Mapped[str | None] = mapped_column(ID)
    last_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    conversation: Mapped[Conversation] = relationship(lazy="raise", back_populates="members")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("sender_id", "client_id"),
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        # Unread counts touch only the unread rows of a conversation.
        Index(
            "ix_messages_unread",
            "conversation_id",
            "sender_id",
            postgresql_where=text("read_at IS NULL AND deleted_at IS NULL"),
            sqlite_where=text("read_at IS NULL AND deleted_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    sender_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    client_id: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[MessageSource] = mapped_column(_str_enum(MessageSource), default=MessageSource.API)
    # PARLEY_CONTACT_INFO=mask: what the sender wrote, before contact details were hidden in
    # `content`; kept for moderators (exports) only. Set means the message carries the
    # "contact_info" flag.
    original_content: Mapped[str | None] = mapped_column(Text)

    sender: Mapped[User] = relationship(lazy="raise")
    attachments: Mapped[list[Attachment]] = relationship(
        lazy="raise", cascade="all, delete-orphan", order_by="Attachment.id"
    )


class Attachment(Base):
    """A file shown in a message. Either external (`{name, url}` given by the sender: nothing stored)
    or uploaded (`storage_key` set): an upload exists before its message, owned by its uploader,
    until a send attaches it (`message_id`)."""

    __tablename__ = "attachments"
    __table_args__ = (
        # The purge of uploads never attached reads the oldest unattached ones straight off this index.
        Index(
            "ix_attachments_unattached",
            "created_at",
            postgresql_where=text("message_id IS NULL"),
            sqlite_where=text("message_id IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    message_id: Mapped[str | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(String(2048))
    kind: Mapped[AttachmentKind] = mapped_column(_str_enum(AttachmentKind))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    uploader_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[AttachmentStatus] = mapped_column(
        _str_enum(AttachmentStatus), default=AttachmentStatus.READY, server_default=AttachmentStatus.READY.value
    )
    # Made from the attachment's id only, never from anything the uploader sent.
    storage_key: Mapped[str | None] = mapped_column(String(200))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    codec: Mapped[str | None] = mapped_column(String(64))
    # [{"size": 320, "key": ..., "width": ..., "height": ..., "content_type": ...}], smallest first.
    thumbnails: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Event(Base):
    """The outbox: every change that anyone outside the writing transaction must hear of."""

    __tablename__ = "events"
    __table_args__ = (
        Index(
            "ix_events_undispatched",
            "id",
            postgresql_where=text("dispatched_at IS NULL"),
            sqlite_where=text("dispatched_at IS NULL"),
        ),
        Index("ix_events_conversation_id_id", "conversation_id", "id"),
        Index(
            "ix_events_redispatch_at",
            "redispatch_at",
            postgresql_where=text("redispatch_at IS NOT NULL"),
            sqlite_where=text("redispatch_at IS NOT NULL"),
        ),
    )

    # SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    type: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str | None] = mapped_column(ID)
    # The user ids the event concerns, written by the service that made the change: a
    # conversation's two members, an upload's uploader before it is sent, an endpoint's owner.
    # Realtime, replay, webhooks and every consumer read it; none works membership out again.
    audience: Mapped[list[str]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"), default=list)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the dispatcher looks again for consumers that left no receipt (their task was lost with
    # a killed worker) and hands the event to them once more; None once every consumer has one.
    redispatch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # How many times the event was handed over: each re-dispatch waits twice as long as the last.
    dispatch_count: Mapped[int] = mapped_column(Integer, server_default="0", default=0)


class _AudienceIncludes(FunctionElement[bool]):
    type = Boolean()
    inherit_cache = True
    name = "audience_includes"


@compiles(_AudienceIncludes, "postgresql")
def _audience_includes_postgresql(element: _AudienceIncludes, compiler: Any, **kw: Any) -> str:
    audience, user_id = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({audience} @> jsonb_build_array(CAST({user_id} AS TEXT)))"


@compiles(_AudienceIncludes, "sqlite")
def _audience_includes_sqlite(element: _AudienceIncludes, compiler: Any, **kw: Any) -> str:
    audience, user_id = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXISTS (SELECT 1 FROM json_each({audience}) WHERE json_each.value = {user_id})"


def audience_includes(user_id: Any) -> ColumnElement[bool]:
    """Whether an event's audience names `user_id` (a value or a bind parameter)."""
    return _AudienceIncludes(Event.audience, user_id)


class ReceiptOutcome(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"  # gave up after its retries; recorded so ordered successors are not held back


class ConsumerReceipt(Base):
    """A consumer has finished with an event. Written in the same transaction as the consumer's own
    database effect, so a redelivered task finds it and does nothing twice."""

    __tablename__ = "consumer_receipts"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("events.id", ondelete="CASCADE"),
        primary_key=True,
    )
    outcome: Mapped[ReceiptOutcome] = mapped_column(_str_enum(ReceiptOutcome))
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    error: Mapped[str | None] = mapped_column(Text)


# --- who may talk to whom (issue 16) -------------------------------------------------------------


class Relationship(Base):
    """A reason two users may talk under PARLEY_CONVERSATION_POLICY=relationships (a contract, an
    order...), managed by the host product under its own `reference`. The pair is stored sorted."""

    __tablename__ = "relationships"
    __table_args__ = (
        Index("ix_relationships_pair", "user_low_id", "user_high_id"),
        Index("ix_relationships_user_high_id", "user_high_id"),
    )

    reference: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_low_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    user_high_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When beat announced this relationship's expiry (conversation.policy_changed); reset by a PUT.
    expiry_announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PolicyDecision(Base):
    """The host product's last answer (PARLEY_CONVERSATION_POLICY=webhook) to "may `from_id` do
    `action` towards `to_id`?": the cache every API process and worker shares. The adapter asks the
    webhook and writes it; the services read it."""

    __tablename__ = "policy_decisions"

    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    from_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    to_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    allow: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(500))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Block(Base):
    """`blocker_id` blocked `blocked_id`: the blocked user cannot start a conversation with, or send
    to, the blocker, and their typing and presence no longer reach the blocker."""

    __tablename__ = "blocks"
    __table_args__ = (Index("ix_blocks_blocked_id", "blocked_id"),)

    blocker_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    blocked_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReportStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Report(Base):
    """A member reported a message to the moderators."""

    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_status_id", "status", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    reporter_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(1000))
    status: Mapped[ReportStatus] = mapped_column(_str_enum(ReportStatus), default=ReportStatus.OPEN)
    resolution: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WsTicket(Base):
    """A one-time credential for opening a WebSocket from a browser, which cannot set headers on
    the upgrade request: short-lived, single-use, and stored only as a hash like API tokens."""

    __tablename__ = "ws_tickets"

    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
# --- outbound webhooks -------------------------------------------------------------------------


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for due_at
    DELIVERING = "delivering"  # claimed by a worker until due_at (its lease); then claimable again
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # out of attempts, or the endpoint answered 410


class WebhookEndpoint(Base):
    """A receiver of events. owner_id NULL: the admin's, which receives every conversation's events;
    otherwise a user's or bot's, which receives events of the conversations its owner is in."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500))
    # Event type names, or ["*"] for all (including types added later).
    event_types: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # Fernet tokens (parley.secret_box): signing needs the secret itself, so it is encrypted, not hashed.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # After a rotation the old secret signs alongside the new one until previous_secret_expires_at.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by the first failed attempt after a success; an endpoint failing for long enough is disabled.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint. Its id is the `webhook-id` header: stable across retries,
    redeliveries and replays, so receivers can deduplicate."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        # The claim query reads only the live rows, in due order.
        Index(
            "ix_webhook_deliveries_due",
            "due_at",
            postgresql_where=text("status IN ('pending', 'delivering')"),
            sqlite_where=text("status IN ('pending', 'delivering')"),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("events.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(_str_enum(DeliveryStatus))
    # pending: when the next attempt is due; delivering: when the claim lapses (a worker died).
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookAttempt(Base):
    """The delivery log: one row per attempt, with what the receiver answered."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(500))


# --- email ----------------------------------------------------------------------------------------


class EmailThread(Base):
    """One user's email thread of one conversation: where the next notification stands (`due_at`:
    the end of the batching window that the first unread message opened; `notified_up_to`: the
    newest message already covered, so none is ever in two emails) and the reply address's token
    (looked up by its SHA-256; kept encrypted too, so every email of the thread carries the same
    address; revocable)."""

    __tablename__ = "email_threads"
    __table_args__ = (
        Index(
            "ix_email_threads_due_at",
            "due_at",
            postgresql_where=text("due_at IS NOT NULL"),
            sqlite_where=text("due_at IS NOT NULL"),
        ),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notified_up_to: Mapped[str | None] = mapped_column(ID)
    reply_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    reply_token_encrypted: Mapped[str | None] = mapped_column(Text)
    reply_token_revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EmailStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for next_attempt_at
    SENDING = "sending"  # claimed by a send task until next_attempt_at (its lease)
    SENT = "sent"
    FAILED = "failed"  # a 5xx answer, or out of attempts: see last_error


class OutgoingEmail(Base):
    """Every email Parley sends, rendered once (`content`: the whole RFC 5322 message), so a retry or
    a second task sends exactly the same bytes, and a sent one is never sent again."""

    __tablename__ = "outgoing_emails"
    __table_args__ = (
        Index(
            "ix_outgoing_emails_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'sending')"),
            sqlite_where=text("status IN ('pending', 'sending')"),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str | None] = mapped_column(ID)
    recipient: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(255), unique=True)  # the Message-ID header
    subject: Mapped[str] = mapped_column(String(998))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[EmailStatus] = mapped_column(_str_enum(EmailStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class InboundEmail(Base):
    """A reply by email that became a message, keyed by its Message-ID: the same reply delivered
    twice posts once. Also what the per-conversation rate limit counts."""

    __tablename__ = "inbound_emails"
    __table_args__ = (Index("ix_inbound_emails_conversation_id_received_at", "conversation_id", "received_at"),)

    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    posted_message_id: Mapped[str] = mapped_column(ID)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DigestItem(Base):
    """A message a digest of its recipient's included, recorded in the transaction that records the
    digest's email: the primary key (user, message) is what keeps a message out of a second digest,
    whatever races (two sweeps, a retry, a forced run)."""

    __tablename__ = "digest_items"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    email_id: Mapped[str] = mapped_column(ID)  # the outgoing_emails row that listed it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
