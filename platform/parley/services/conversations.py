"""Conversations: one per unordered pair of users, found or created on first contact, listed as
each member's inbox."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, String, bindparam, case, func, or_, select, tuple_, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from parley.config import Settings
from parley.db import reading, transaction
from parley.errors import Invalid, NotFound
from parley.events import ConversationCreated, EventType
from parley.ids import is_valid_id
from parley.models import Conversation, ConversationMember, Message, User, UTCDateTime
from parley.schemas import ConversationMembersOut, ConversationOut, UserSummary
from parley.services.message_views import MESSAGE_COLUMNS, attachments_of, message_view, summary_of, unread_by
from parley.services import policy
from parley.services.blocks import blocked_error, is_blocked_by
from parley.services.outbox import record_event
from parley.services.users import get_user, get_user_by_username

INBOX_DEFAULT_LIMIT = 50
INBOX_MAX_LIMIT = 200


@dataclass(frozen=True)
class OtherUser:
    """Who to talk to: by id or by username (exactly one)."""

    user_id: str | None = None
    username: str | None = None


def get_or_create_conversation(
    session: Session, actor: User, other: OtherUser, settings: Settings | None = None
) -> tuple[Conversation, bool]:
    """The conversation between `actor` and `other`, created (with `conversation.created`) if it
    does not exist yet. Returns (conversation, created). Starting one is refused to a user the
    other has blocked (403 blocked) and when the conversation policy (`settings`) says no (403
    policy_denied); an existing conversation is found whatever the policy (sending is checked)."""
    with transaction(session):
        return _get_or_create(session, actor, other, settings)


def _get_or_create(
    session: Session, actor: User, other: OtherUser, settings: Settings | None
) -> tuple[Conversation, bool]:
    try:
        if other.user_id is not None:
            other_user = get_user(session, other.user_id)
        else:
            other_user = get_user_by_username(session, other.username or "")
    except NotFound as exc:
        raise NotFound("no such user to talk to", code="user_not_found", details=exc.details) from None
    if other_user.id == actor.id:
        raise Invalid("you cannot start a conversation with yourself", code="cannot_message_self")

    pair_key = Conversation.pair_key_for(actor.id, other_user.id)
    existing = _find_by_pair(session, pair_key)
    if existing is not None:
        return existing, False
    if is_blocked_by(session, other_user.id, actor.id):
        raise blocked_error()
    if settings is not None:
        policy.check(session, settings, policy.Action.START, actor.id, other_user.id)

    conversation = Conversation(pair_key=pair_key, initiator_id=actor.id, recipient_id=other_user.id)
    try:
        # A savepoint, so that losing a race to create the same pair leaves our transaction usable.
        with session.begin_nested():
            session.add(conversation)
            session.add_all(
                [
                    ConversationMember(conversation=conversation, user_id=actor.id),
                    ConversationMember(conversation=conversation, user_id=other_user.id),
                ]
            )
    except IntegrityError:
        winner = _find_by_pair(session, pair_key)
        if winner is None:  # pragma: no cover - the unique violation proves it exists
            raise
        return winner, False

    record_event(
        session,
        EventType.CONVERSATION_CREATED,
        ConversationCreated(conversation=ConversationMembersOut.of(conversation, actor, other_user)),
        conversation_id=conversation.id,
        audience=conversation.member_ids,
    )
    return conversation, True


def _find_by_pair(session: Session, pair_key: str) -> Conversation | None:
    result = session.execute(select(Conversation).where(Conversation.pair_key == pair_key))
    return result.scalar_one_or_none()


@dataclass(frozen=True)
class Membership:
    """The two members of a conversation the caller belongs to."""

    conversation_id: str
    initiator_id: str
    recipient_id: str

    def other_member_id(self, user_id: str) -> str:
        return self.recipient_id if user_id == self.initiator_id else self.initiator_id

    @property
    def member_ids(self) -> tuple[str, str]:
        return (self.initiator_id, self.recipient_id)


def get_member_conversation(session: Session, conversation_id: str, user_id: str) -> Membership:
    """The conversation's members, if `user_id` is one of them. Anyone else is told it does not
    exist, so conversation ids reveal nothing."""
    row = None
    if is_valid_id(conversation_id):
        row = (session.execute(_MEMBERS, {"conversation_id": conversation_id, "viewer_id": user_id})).first()
    if row is None:
        raise NotFound("no such conversation", details={"conversation_id": conversation_id})
    return Membership(conversation_id, row.initiator_id, row.recipient_id)


def find_conversation_with(
    session: Session, viewer: User, other_user_id: str, *, settings: Settings | None = None
) -> ConversationOut:
    pair_key = Conversation.pair_key_for(viewer.id, other_user_id) if is_valid_id(other_user_id) else ""
    with reading(session):
        found = _conversation_views(session, viewer, _BY_PAIR, settings, pair_key=pair_key)
    if not found:
        raise NotFound("no conversation with this user yet", details={"user_id": other_user_id})
    return found[0]


def show_conversation(
    session: Session, viewer: User, conversation_id: str, *, settings: Settings | None = None
) -> ConversationOut:
    found = []
    if is_valid_id(conversation_id):
        with reading(session):
            found = _conversation_views(session, viewer, _BY_ID, settings, conversation_id=conversation_id)
    if not found:
        raise NotFound("no such conversation", details={"conversation_id": conversation_id})
    return found[0]


@dataclass(frozen=True)
class InboxPage:
    items: list[ConversationOut]
    next_cursor: str | None


def list_inbox(
    session: Session,
    viewer: User,
    *,
    cursor: str | None = None,
    limit: int = INBOX_DEFAULT_LIMIT,
    settings: Settings | None = None,
) -> InboxPage:
    """The viewer's conversations, most recent activity first, `limit` at a time."""
    position = decode_inbox_cursor(cursor) if cursor else None
    with reading(session):
        if position is None:
            items = _conversation_views(session, viewer, _INBOX_FIRST_PAGE, settings, limit=limit + 1)
        else:
            items = _conversation_views(
                session, viewer, _INBOX_NEXT_PAGE, settings, limit=limit + 1, after_updated_at=position[0], after_id=position[1]
            )
    page, more = items[:limit], len(items) > limit
    next_cursor = encode_inbox_cursor(page[-1].updated_at, page[-1].id) if more and page else None
    return InboxPage(items=page, next_cursor=next_cursor)


# "<updated_at in microseconds since 1970>.<conversation id>", or empty for the first page: a
# format the API document can state exactly, so any cursor it allows is one this server reads.
INBOX_CURSOR_PATTERN = r"^(?:[0-9]{1,16}\.[0-9A-HJKMNP-TV-Z]{26})?$"
_CURSOR = re.compile(r"^([0-9]{1,16})\.([0-9A-HJKMNP-TV-Z]{26})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_inbox_cursor(updated_at: datetime, conversation_id: str) -> str:
    if updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=UTC)
    return f"{(updated_at - _EPOCH) // _MICROSECOND}.{conversation_id}"


def decode_inbox_cursor(cursor: str) -> tuple[datetime, str]:
    match = _CURSOR.match(cursor)
    if match is None:
        raise Invalid("cursor is not one this server gave out", code="invalid_cursor")
    try:
        return _EPOCH + int(match.group(1)) * _MICROSECOND, match.group(2)
    except OverflowError:  # more microseconds than fit before year 10,000
        raise Invalid("cursor is not one this server gave out", code="invalid_cursor") from None


def _is_member(user_id: str | ColumnElement[str]) -> ColumnElement[bool]:
    return or_(Conversation.initiator_id == user_id, Conversation.recipient_id == user_id)


_OTHER = aliased(User, name="other_user")
_LAST = aliased(Message, name="last_message")
_LAST_LABELS = [(column, f"last_{column.key}") for column in MESSAGE_COLUMNS]
_LAST_COLUMNS = [getattr(_LAST, column.key).label(label) for column, label in _LAST_LABELS]


def _view_query() -> Select[Any]:
    """Conversations as the viewer (bound as `viewer_id`) sees them, in one query: the other
    member, the last message (the highest id: ids are time-ordered) and the viewer's unread count,
    via correlated subqueries that each read a few index entries. Callers add filter and order."""
    other_id = case(
        (Conversation.initiator_id == _VIEWER, Conversation.recipient_id), else_=Conversation.initiator_id
    )
    last_id = (
        select(func.max(Message.id)).where(Message.conversation_id == Conversation.id).scalar_subquery()
    )
    unread = (
        select(func.count()).where(Message.conversation_id == Conversation.id, unread_by(_VIEWER)).scalar_subquery()
    )
    return (
        select(
            Conversation.id,
            Conversation.initiator_id,
            Conversation.recipient_id,
            Conversation.created_at,
            Conversation.updated_at,
            _OTHER.id.label("other_id"),
            _OTHER.username.label("other_username"),
            _OTHER.name.label("other_name"),
            _OTHER.avatar_url.label("other_avatar_url"),
            unread.label("unread_count"),
            *_LAST_COLUMNS,
        )
        .join(_OTHER, _OTHER.id == other_id)
        .outerjoin(_LAST, _LAST.id == last_id)
    )


def _inbox_side(member_column: InstrumentedAttribute[str], *, paged: bool) -> Select[Any]:
    query = select(Conversation.id, Conversation.updated_at).where(member_column == _VIEWER)
    if paged:
        query = query.where(
            tuple_(Conversation.updated_at, Conversation.id)
            < tuple_(bindparam("after_updated_at", type_=UTCDateTime()), bindparam("after_id", type_=String()))
        )
    return query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(_LIMIT)


def _inbox_query(*, paged: bool) -> Select[Any]:
    # Each member side is read newest-first straight off its own index and the two short lists
    # merged, so a page costs the same for a user with ten conversations or ten thousand.
    sides = [
        _inbox_side(column, paged=paged).subquery()
        for column in (Conversation.initiator_id, Conversation.recipient_id)
    ]
    both = union_all(*(select(side.c.id, side.c.updated_at) for side in sides)).subquery()
    # Cut the merged list to the page before joining, so only the page's rows get their other
    # member, last message and unread count looked up.
    page = select(both.c.id).order_by(both.c.updated_at.desc(), both.c.id.desc()).limit(_LIMIT).subquery()
    return (
        _VIEW.join(page, page.c.id == Conversation.id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    )


# Built once: a statement made per request costs more Python than its database round trip.
_VIEWER = bindparam("viewer_id", type_=String())
_LIMIT = bindparam("limit", type_=Integer())
_VIEW = _view_query()
_BY_ID = _VIEW.where(Conversation.id == bindparam("conversation_id", type_=String()), _is_member(_VIEWER))
_BY_PAIR = _VIEW.where(Conversation.pair_key == bindparam("pair_key", type_=String()))
_INBOX_FIRST_PAGE = _inbox_query(paged=False)
_INBOX_NEXT_PAGE = _inbox_query(paged=True)
_MEMBERS = select(Conversation.initiator_id, Conversation.recipient_id).where(
    Conversation.id == bindparam("conversation_id", type_=String()), _is_member(_VIEWER)
)


def _conversation_views(
    session: Session, viewer: User, query: Select[Any], settings: Settings | None, **params: object
) -> list[ConversationOut]:
    rows = (session.execute(query, {"viewer_id": viewer.id, **params})).all()
    me = summary_of(viewer)
    verdicts = policy.verdicts(session, settings, policy.Action.SEND, viewer.id, [row.other_id for row in rows])
    attachments = attachments_of(session, [row.last_id for row in rows if row.last_id is not None])
    views = []
    for row in rows:
        other = UserSummary(
            id=row.other_id, username=row.other_username, name=row.other_name, avatar_url=row.other_avatar_url
        )
        last_message = None
        if row.last_id is not None:
            mapping = row._mapping
            last = {column.key: mapping[label] for column, label in _LAST_LABELS}
            sender = me if last["sender_id"] == viewer.id else other
            last_message = message_view(last, sender, attachments.get(row.last_id, []))
        views.append(
            ConversationOut(
                id=row.id,
                initiator_id=row.initiator_id,
                recipient_id=row.recipient_id,
                created_at=row.created_at,
                updated_at=row.updated_at,
                other_user=other,
                last_message=last_message,
                unread_count=row.unread_count,
                can_send=verdicts[row.other_id].allow,
                cannot_send_reason=verdicts[row.other_id].reason,
            )
        )
    return views
