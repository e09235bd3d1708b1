"""A digest email from its facts: the `digest` templates' context and the headers (one-click
unsubscribe that turns `email_digest` off; no thread: every digest stands alone)."""

from __future__ import annotations

from integrations.email.compose import Outgoing, address_domain, build_message, render
from integrations.email.notifications import unsubscribe_url
from parley.config import Settings
from parley.digest_times import zone_of
from parley.services.email_digests import DigestFacts
from parley.services.email_notifications import DIGEST_LIST, ComposedEmail


def digest_context(settings: Settings, facts: DigestFacts) -> dict[str, object]:
    zone = zone_of(facts.timezone)
    return {
        "recipient_name": facts.recipient_name,
        "frequency": facts.frequency,
        "total_messages": facts.total_messages,
        "total_conversations": facts.total_conversations,
        "conversations": [
            {
                "other_name": c.other.name,
                "avatar_url": c.other.avatar_url,
                "unread": c.unread,
                "url": c.url,
                "messages": [
                    {
                        "sender_name": m.sender_name,
                        "time": m.created_at.astimezone(zone).strftime("%a %d %b %H:%M"),
                        "text": m.text,
                        "attachments": m.attachment_names,
                    }
                    for m in c.latest
                ],
            }
            for c in facts.conversations
        ],
        "unsubscribe_url": unsubscribe_url(settings, facts.user_id, DIGEST_LIST),
    }


def compose_digest(settings: Settings, facts: DigestFacts) -> ComposedEmail:
    context = digest_context(settings, facts)
    rendered = render("digest", context)
    unsubscribe = str(context["unsubscribe_url"])
    message_id = f"{facts.email_id}.digest@{address_domain(settings.email_from)}"
    content = build_message(
        Outgoing(
            recipient_name=facts.recipient_name,
            recipient_address=facts.recipient_email,
            rendered=rendered,
            message_id=message_id,
            from_address=settings.email_from,
            headers={
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "X-Parley-Digest": facts.frequency,
            },
        )
    )
    return ComposedEmail(message_id=message_id, subject=rendered.subject, content=content)
