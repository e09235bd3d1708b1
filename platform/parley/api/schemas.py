"""HTTP request bodies and the response wrappers around parley.schemas. Requests forbid unknown
fields, so a misspelt field is an error rather than silently ignored."""

from __future__ import annotations

from datetime import datetime
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from parley.ids import ID_PATTERN, is_valid_id
from parley.digest_times import is_known_zone, known_zones
from parley.models import EmailDigest, UserKind, Weekday
from parley.schemas import ConversationOut, MessageOut
from parley.services.conversations import INBOX_CURSOR_PATTERN, INBOX_DEFAULT_LIMIT, INBOX_MAX_LIMIT
from parley.services.messages import HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, MAX_ATTACHMENTS
from parley.services.users import USERNAME_PATTERN, is_valid_username


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
    if not _WEB_URL.fullmatch(value):
        raise ValueError("must be an http(s):// URL with a host, in printable ASCII (no spaces)")
    return value


# What the document states about strings; the validators above and the services enforce it.
# Patterns are spelt with \\u escapes only, so they mean the same in any regex dialect.
NO_NUL_PATTERN = r"^[^\u0000]*$"
# An http(s) URL with a host, in printable ASCII: an IDN host goes in its xn-- form, and a host is
# a name or an IPv4 address (no [IPv6] literal). The host ends at the first / ? or #.
_URL_HOST_CHAR = r"[-!$&'()*+,.0-9:;=A-Z_a-z~%]"
WEB_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_URL_HOST_CHAR}*@)?{_URL_HOST_CHAR}+(?:[/?#][!-~]*)?$"
)
ID_SCHEMA_PATTERN = ID_PATTERN.pattern
# Python's whitespace (str.isspace: what str.strip() trims) spelt out, for the message content rule.
WHITESPACE_CLASS = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x10000)) if c.isspace())


def message_content_pattern(max_chars: int) -> str:
    """1 to max_chars characters once leading and trailing whitespace is trimmed, no NUL."""
    ws, other = f"[{WHITESPACE_CLASS}]", f"[^{WHITESPACE_CLASS}\\u0000]"
    middle = f"(?:[^\\u0000]{{0,{max_chars - 2}}}{other})?" if max_chars > 1 else ""
    return f"^{ws}*{other}{middle}{ws}*$"


def _documented(**schema: object) -> Field:  # type: ignore[valid-type]
    return Field(json_schema_extra=schema)  # type: ignore[arg-type]


Text = Annotated[str, AfterValidator(_storable), _documented(pattern=NO_NUL_PATTERN)]
_WEB_URL = re.compile(WEB_URL_PATTERN)
WebUrl = Annotated[str, Field(max_length=2048), _documented(pattern=WEB_URL_PATTERN), AfterValidator(_web_url)]


def _an_id(value: str) -> str:
    # Checked before it reaches a query: NUL, a lone surrogate or a 10 kB string is not an id.
    if not is_valid_id(value):
        raise ValueError("must be an id (26 characters, as the API gives them out)")
    return value


Id = Annotated[str, AfterValidator(_an_id), _documented(pattern=ID_SCHEMA_PATTERN)]
MessageId = Id
# The largest integer a client may send for storing: what a JavaScript number holds exactly, well
# inside PostgreSQL's bigint.
MAX_STORED_INT = 2**53 - 1


def _json_number(value: object) -> object:
    # A JSON integer: 3 or 3.0, not true or "3" (which pydantic's lax mode would take).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    return value




class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


USERNAME_RULE = "1 to 40 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"


def _username(value: str) -> str:
    if not is_valid_username(value):
        raise ValueError(f"must be {USERNAME_RULE}")
    return value


class CreateUserBody(RequestBody):
    username: Annotated[
        str, Field(min_length=1, max_length=40, description=USERNAME_RULE), AfterValidator(_username),
        _documented(pattern=USERNAME_PATTERN),
    ]
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    email: EmailStr | None = None
    avatar_url: WebUrl | None = None
    kind: UserKind = UserKind.USER


class CreateTokenBody(RequestBody):
    name: Annotated[Text, Field(min_length=1, max_length=100)] | None = None


def _known_zone(value: str | None) -> str | None:
    if value is not None and not is_known_zone(value):
        raise ValueError("must be an IANA time zone name, such as Europe/Paris or UTC")
    return value


class SettingsPatchBody(RequestBody):
    inbox_notifications: StrictBool | None = None
    order_updates_notifications: StrictBool | None = None
    email_digest: EmailDigest | None = None
    timezone: Annotated[
        str,
        Field(min_length=1, max_length=64, json_schema_extra={"enum": sorted(known_zones())}),
        AfterValidator(_known_zone),
    ] | None = Field(
        default=None, description="An IANA time zone name (Europe/Paris, America/Los_Angeles, UTC): digests come "
        "at digest_hour there, daylight saving included."
    )
    digest_hour: Annotated[int, Field(ge=0, le=23), BeforeValidator(_json_number)] | None = Field(
        default=None, description="The local hour (0-23) a digest comes at."
    )
    digest_weekday: Weekday | None = Field(default=None, description="The day a weekly digest comes on.")


class AttachmentBody(RequestBody):
    name: Annotated[Text, Field(min_length=1, max_length=255)]
    url: WebUrl
    content_type: Annotated[str, Field(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=255)] | None = None
    size: Annotated[int, Field(ge=0, le=MAX_STORED_INT), BeforeValidator(_json_number)] | None = None


def _at_most_attachments_in_all(schema: dict[str, Any]) -> None:
    """The document's side of "at most MAX_ATTACHMENTS in all", links and uploads together."""
    schema["anyOf"] = [
        {"properties": {"attachments": {"maxItems": links}, "attachment_ids": {"maxItems": MAX_ATTACHMENTS - links}}}
        for links in range(MAX_ATTACHMENTS + 1)
    ]


class SendMessageBody(RequestBody):
    model_config = ConfigDict(json_schema_extra=_at_most_attachments_in_all)

    content: Text = Field(description="1 to PARLEY_MAX_MESSAGE_CHARS characters after trimming; stored exactly as sent.")
    attachments: Annotated[list[AttachmentBody], Field(max_length=MAX_ATTACHMENTS)] = []
    attachment_ids: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=MAX_ATTACHMENTS)] = Field(
        default=[], description="Ids of your uploads (POST /attachments) not used yet; at most 10 attachments in all."
    )
    client_id: Annotated[Text, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Idempotency key: a repeated send with the same client_id returns the original message."
    )


def _exactly_one_of(*names: str) -> Callable[[dict[str, Any]], None]:
    """The document's side of "exactly one of": each given field is a string (never null), and
    exactly one of them is given."""

    def document(schema: dict[str, Any]) -> None:
        for name in names:
            shown = schema["properties"][name]
            schema["properties"][name] = {"type": "string", **{k: shown[k] for k in ("title", "description") if k in shown}}
        schema["oneOf"] = [{"required": [name]} for name in names]

    return document


class CreateConversationBody(RequestBody):
    model_config = ConfigDict(json_schema_extra=_exactly_one_of("user_id", "username"))

    user_id: str | None = Field(default=None, description="The other user's id; or give `username`.")
    username: str | None = Field(default=None, description="The other user's username (any case); or give `user_id`.")
    message: SendMessageBody | None = Field(default=None, description="Optional first message, sent in the same step.")

    @field_validator("user_id", "username", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("give a string, or leave the field out")
        return value

    @model_validator(mode="after")
    def _exactly_one_user(self) -> CreateConversationBody:
        if (self.user_id is None) == (self.username is None):
            raise ValueError("give exactly one of user_id or username")
        return self


class MarkReadBody(RequestBody):
    message_id: MessageId | None = Field(default=None, description="Read up to and including this message; default: all.")


class HistoryQuery(RequestBody):
    before: MessageId | None = Field(default=None, description="Page back: messages older than this message id.")
    after: MessageId | None = Field(
        default=None,
        description="Page forward: messages newer than this message id (with `before` too: the messages between them).",
    )
    limit: Annotated[int, Field(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT


class InboxQuery(RequestBody):
    cursor: Annotated[str, _documented(pattern=INBOX_CURSOR_PATTERN)] | None = Field(
        default=None, description="next_cursor of the previous page."
    )
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
