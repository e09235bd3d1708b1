"""A notification email from its facts: the template context and the headers that make all of a
conversation's notifications one thread in Gmail, Outlook and Apple Mail (a stable root id in
In-Reply-To and References, the same subject), plus Reply-To and one-click unsubscribe."""

from __future__ import annotations

from urllib.parse import urljoin

from integrations.email.compose import Outgoing, address_domain, build_message, render
from parley.config import Settings
from parley.services.email_notifications import ComposedEmail, NotificationFacts, unsubscribe_token

UNSUBSCRIBE_PATH = "/api/v1/email/unsubscribe/"


def thread_root_id(settings: Settings, conversation_id: str, user_id: str) -> str:
    """The same for every notification of (conversation, user): what In-Reply-To and References
    point at, so mail clients keep them in one thread."""
    return f"conversation.{conversation_id}.{user_id}@{address_domain(settings.email_from)}"


def unsubscribe_url(settings: Settings, user_id: str, what: str = "notifications") -> str:
    """The one-click link (List-Unsubscribe and the footer); its token says which emails it stops."""
    return settings.public_url.rstrip("/") + UNSUBSCRIBE_PATH + unsubscribe_token(settings, user_id, what)


def reply_address(settings: Settings, token: str) -> str:
    return f"reply+{token}@{settings.email_reply_domain}"


def compose_notification(settings: Settings, facts: NotificationFacts) -> ComposedEmail:
    base = settings.public_url.rstrip("/") + "/"
    messages = [
        {
            "sender_name": m.sender.name,
            "avatar_url": m.sender.avatar_url,
            "time": m.created_at.strftime("%Y-%m-%d %H:%M UTC"),
            "text": m.content,
            "attachments": [{"name": a.name, "url": urljoin(base, a.url)} for a in m.attachments],
        }
        for m in facts.messages
    ]
    unsubscribe = unsubscribe_url(settings, facts.recipient.id)
    rendered = render(
        "notification",
        {
            "recipient_name": facts.recipient.name,
            "other_name": facts.other.name,
            "messages": messages,
            "reply_enabled": facts.reply_token is not None,
            "unsubscribe_url": unsubscribe,
        },
    )
    root = f"<{thread_root_id(settings, facts.conversation_id, facts.recipient.id)}>"
    headers = {
        "In-Reply-To": root,
        "References": root,
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Parley-Conversation": facts.conversation_id,
    }
    if facts.reply_token is not None:
        headers["Reply-To"] = reply_address(settings, facts.reply_token)
    message_id = f"{facts.email_id}.notification@{address_domain(settings.email_from)}"
    assert facts.recipient.email is not None
    content = build_message(
        Outgoing(
            recipient_name=facts.recipient.name,
            recipient_address=facts.recipient.email,
            rendered=rendered,
            message_id=message_id,
            from_address=settings.email_from,
            headers=headers,
        )
    )
    return ComposedEmail(message_id=message_id, subject=rendered.subject, content=content)
