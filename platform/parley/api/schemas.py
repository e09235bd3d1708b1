"""HTTP request bodies and the response wrappers around parley.schemas. Requests forbid unknown
fields, so a misspelt field is an error rather than silently ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from parley.ids import is_valid_id
from parley.models import EmailDigest, UserKind
from parley.schemas import ConversationOut, MessageOut
from parley.services.conversations import INBOX_DEFAULT_LIMIT, INBOX_MAX_LIMIT
from parley.services.messages import HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, MAX_ATTACHMENTS
from parley.services.users import USERNAME_PATTERN


def _storable(value: str) -> str:
    # NUL cannot be stored in PostgreSQL text, and a lone surrogate is not UTF-8: refuse both here
    # rather than fail inside the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _web_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("must be an http(s) URL")
    return value


def _an_id(value: str) -> str:
    # Checked before it reaches a query: NUL, a lone surrogate or a 10 kB string is not an id.
    if not is_valid_id(value):
        raise ValueError("must be an id (26 characters, as the API gives them out)")
    return value


Text = Annotated[str, AfterValidator(_storable)]
Id = Annotated[str, AfterValidator(_an_id)]
# The largest integer a client may send for storing: what a JavaScript number holds exactly, well
# inside PostgreSQL's bigint.
MAX_STORED_INT = 2**53 - 1
WebUrl = Annotated[str, Field(max_length=2048), AfterValidator(_storable), AfterValidator(_web_url)]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class CreateUserBody(RequestBody):
    username: Annotated[str, Field(pattern=USERNAME_PATTERN, min_length=1, max_length=40)]
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    email: EmailStr | None = None
    avatar_url: WebUrl | None = None
    kind: UserKind = UserKind.USER


class CreateTokenBody(RequestBody):
    name: Annotated[Text, Field(min_length=1, max_length=100)] | None = None


class SettingsPatchBody(RequestBody):
    inbox_notifications: bool | None = None
    order_updates_notifications: bool | None = None
    email_digest: EmailDigest | None = None


class AttachmentBody(RequestBody):
    name: Annotated[Text, Field(min_length=1, max_length=255)]
    url: WebUrl
    content_type: Annotated[str, Field(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=255)] | None = None
    size: Annotated[int, Field(ge=0, le=MAX_STORED_INT)] | None = None


class SendMessageBody(RequestBody):
    content: Text = Field(description="1 to PARLEY_MAX_MESSAGE_CHARS characters after trimming; stored exactly as sent.")
    attachments: Annotated[list[AttachmentBody], Field(max_length=MAX_ATTACHMENTS)] = []
    attachment_ids: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=MAX_ATTACHMENTS)] = Field(
        default=[], description="Ids of your uploads (POST /attachments) not used yet; at most 10 attachments in all."
    )
    client_id: Annotated[Text, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Idempotency key: a repeated send with the same client_id returns the original message."
    )


class CreateConversationBody(RequestBody):
    user_id: str | None = None
    username: str | None = None
    message: SendMessageBody | None = Field(default=None, description="Optional first message, sent in the same step.")

    @model_validator(mode="after")
    def _exactly_one_user(self) -> CreateConversationBody:
        if (self.user_id is None) == (self.username is None):
            raise ValueError("give exactly one of user_id or username")
        return self


class MarkReadBody(RequestBody):
    message_id: str | None = Field(default=None, description="Read up to and including this message; default: all.")


class HistoryQuery(RequestBody):
    before: Id | None = Field(default=None, description="Page back: messages older than this message id.")
    after: Id | None = Field(default=None, description="Page forward: messages newer than this message id.")
    limit: Annotated[int, Field(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT


class InboxQuery(RequestBody):
    cursor: Annotated[str, Field(max_length=200)] | None = Field(default=None, description="next_cursor of the previous page.")
    limit: Annotated[int, Field(ge=1, le=INBOX_MAX_LIMIT)] = INBOX_DEFAULT_LIMIT


class TokenCreatedOut(BaseModel):
    id: str
    token: str = Field(description="Shown this once; Parley keeps only its hash.")
    user_id: str
    name: str | None
    created_at: datetime


class HistoryOut(BaseModel):
    items: list[MessageOut]
    has_more: bool = Field(description="Older messages exist (newer ones, when paging with `after`).")


class InboxOut(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class ReadReceiptOut(BaseModel):
    conversation_id: str
    up_to_message_id: str | None
    read_at: datetime
    count: int = Field(description="Messages that became read now.")
    unread_count: int = Field(description="Messages the caller still has not read in this conversation.")


class ThumbnailQuery(RequestBody):
    size: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=320, description="Long side wanted, in pixels: the smallest thumbnail at least this big (320, 1280)."
    )


class HealthOut(BaseModel):
    status: Literal["ok"]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, object]


class ErrorOut(BaseModel):
    error: ErrorBody
