"""Replies by email coming in: the one pipeline behind `parley mail-in` (SMTP/LMTP) and
POST /api/v1/inbound/email.

receive(raw) parses the message with the standard `email` package, drops what must never be
posted (each with its reason, logged as `email.inbound_dropped`), finds the reply token, strips the
quoted history and the signature (mail-parser-reply; HTML-only mail is turned into text first with
html2text), stores the attachments (sniffed, within PARLEY_MAX_UPLOAD_BYTES) and posts the reply
through parley.services.email_replies.post_reply. Database work goes through `run(service, *args)`,
which the caller supplies: a sync session for mail-in, the API's async engine for the route.
"""

from __future__ import annotations

import contextlib
import email
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses, parseaddr
from typing import Any

import html2text
from mailparser_reply import EmailReplyParser

from integrations.media.sniffing import sniff
from parley.config import Settings
from parley.errors import DomainError
from parley.services.policy import Action
from parley.services.users import get_user
from parley.services.attachments import new_upload_key
from parley.services.email_replies import (
    DuplicateReply,
    ReplyOutcome,
    ReplyTarget,
    StoredFile,
    find_reply_target,
    post_reply,
)
from parley.services.messages import MAX_ATTACHMENTS
from parley.services.storage import Storage, attachment_prefix
from webhooks.policy import consult_in_thread

log = logging.getLogger("parley.email")

Run = Callable[..., Any]
REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv"]
_PRECEDENCE_DROPPED = {"bulk", "junk", "list", "auto_reply"}


@dataclass(frozen=True)
class Outcome:
    posted_message_id: str | None = None
    ignored: str | None = None


def reply_token_of(address: str, settings: Settings) -> str | None:
    """The token of reply+<token>@<PARLEY_EMAIL_REPLY_DOMAIN>, or None."""
    domain = (settings.email_reply_domain or "").lower()
    if not domain:
        return None
    local, _, at = parseaddr(address)[1].lower().rpartition("@")
    if at != domain or not local.startswith("reply+"):
        return None
    token = local[len("reply+"):]
    return token if re.fullmatch(r"[a-z2-7]{16,64}", token) else None


def drop_reason(message: EmailMessage, settings: Settings) -> str | None:
    """Why a message must not be posted, from its headers alone: loops and automatic mail."""
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto.split(";")[0].strip() != "no":
        return "auto_submitted"
    if str(message.get("Precedence", "")).strip().lower() in _PRECEDENCE_DROPPED:
        return "precedence"
    if message.get("X-Autoreply") is not None or message.get("X-Autorespond") is not None:
        return "autoreply_header"
    if message.get("List-Id") is not None:
        return "list_id"
    if message.get_content_type() == "multipart/report":
        return "delivery_report"
    return_path = message.get("Return-Path")
    if return_path is not None and parseaddr(str(return_path))[1] == "" and "<>" in str(return_path).replace(" ", ""):
        return "empty_return_path"
    sender = parseaddr(str(message.get("From", "")))[1].lower()
    if sender and sender == parseaddr(settings.email_from)[1].lower():
        return "from_parley"
    return None


def _text_of(message: EmailMessage) -> str:
    plain = message.get_body(preferencelist=("plain",))
    if plain is not None:
        return str(plain.get_content())
    html = message.get_body(preferencelist=("html",))
    if html is None:
        return ""
    converter = html2text.HTML2Text()
    converter.ignore_images = True
    converter.body_width = 0
    return converter.handle(str(html.get_content()))


def strip_reply(text: str) -> str:
    """The new text of a reply: quoted history ("On ... wrote:", Outlook's header block, "> ")
    and the signature removed."""
    text = text.replace("\r\n", "\n")
    parsed = EmailReplyParser(languages=REPLY_LANGUAGES).read(text=text)
    body = parsed.replies[0].body if parsed.replies else text
    lines = [line for line in body.strip().splitlines()]
    # Whatever quoting is left at the end (a bare "> " block) goes too.
    while lines and (lines[-1].startswith(">") or not lines[-1].strip()):
        lines.pop()
    return "\n".join(lines).strip()


@dataclass(frozen=True)
class FilePart:
    name: str | None
    data: bytes


def _attachments(message: EmailMessage) -> list[FilePart]:
    found = []
    for part in message.iter_attachments():
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True)
        if isinstance(data, bytes) and data:
            found.append(FilePart(part.get_filename(), data))
    return found


def _recipients(message: EmailMessage, envelope: Iterable[str]) -> list[str]:
    listed = list(envelope)
    if listed:
        return listed
    headers = []
    for name in ("Delivered-To", "X-Original-To", "To", "Cc"):
        headers.extend(str(v) for v in message.get_all(name, []))
    return [address for _, address in getaddresses(headers)]


def _message_id(message: EmailMessage, raw: bytes) -> str:
    value = str(message.get("Message-ID", "")).strip()
    return value[:255] if value else "sha256:" + hashlib.sha256(raw).hexdigest()


def dropped(reason: str, **facts: object) -> Outcome:
    log.info("email.inbound_dropped", extra={"reason": reason, **facts})
    return Outcome(ignored=reason)


def receive(
    raw: bytes, *, settings: Settings, storage: Storage, run: Run, envelope_recipients: Iterable[str] = ()
) -> Outcome:
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    message_id = _message_id(message, raw)
    facts: dict[str, object] = {"inbound_message_id": message_id}
    reason = drop_reason(message, settings)
    if reason is not None:
        return dropped(reason, **facts)
    tokens = [t for t in (reply_token_of(a, settings) for a in _recipients(message, envelope_recipients)) if t]
    if not tokens:
        return dropped("unknown_recipient", **facts)
    target: ReplyTarget | None = run(find_reply_target, tokens[0])
    if target is None:
        return dropped("unknown_token", **facts)
    facts.update(user_id=target.user_id, conversation_id=target.conversation_id)
    sender = parseaddr(str(message.get("From", "")))[1].lower()
    if not target.email or sender != target.email.lower():
        return dropped("from_mismatch", **facts)
    text = strip_reply(_text_of(message))
    parts = _attachments(message)
    if not text and not parts:
        return dropped("empty", **facts)
    stored = _store(parts, settings, storage, facts)
    if not text and not stored:
        return dropped("empty", **facts)
    try:
        replier = run(get_user, target.user_id)
        # The webhook policy's answer is asked for here, outside the service, like the API does.
        consult_in_thread(run, settings, replier, [Action.SEND], conversation_id=target.conversation_id)
        outcome = run(post_reply, settings, target, message_id, text, stored)
    except DuplicateReply:
        outcome = None
    except DomainError as refused:
        # The rules every send follows (a block, the conversation policy, contact details, a
        # suspension) refused it: dropped with the rule's code, never an error the provider or the
        # relay would retry.
        outcome = ReplyOutcome(None, refused.code)
    if outcome is None or outcome.ignored is not None:
        for file in stored:
            with contextlib.suppress(Exception):
                storage.delete_prefix(attachment_prefix(file.attachment_id))
        return dropped(outcome.ignored if outcome is not None else "duplicate", **facts)
    log.info("email.reply_posted", extra={**facts, "message_id": outcome.message_id})
    return Outcome(posted_message_id=outcome.message_id)


def _store(parts: list[FilePart], settings: Settings, storage: Storage, facts: dict[str, object]) -> list[StoredFile]:
    stored = []
    for part in parts[:MAX_ATTACHMENTS]:
        if len(part.data) > settings.max_upload_bytes:
            log.info("email.attachment_skipped", extra={**facts, "reason": "too_large", "name": part.name})
            continue
        sniffed = sniff(part.data[:8192])
        if sniffed.kind is None:
            log.info("email.attachment_skipped", extra={**facts, "reason": sniffed.label, "name": part.name})
            continue
        attachment_id, key = new_upload_key()
        storage.store_bytes(key, part.data, sniffed.content_type)
        stored.append(StoredFile(attachment_id, key, sniffed, len(part.data), part.name))
    return stored


def session_runner(sessions: Any) -> Run:
    """run(service, *args) on a sync sessionmaker: mail-in's way to the database."""

    def run(service: Callable[..., Any], *args: Any) -> Any:
        with sessions() as session:
            return service(session, *args)

    return run
