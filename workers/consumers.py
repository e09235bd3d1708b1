"""The one place consumers are registered.

A consumer is a `parley.outbox.consumers.Consumer`: a stable name, the event types it takes, a
handler, the kind of work (its queue) and, if it needs them, ordering and time limits. The ones
Parley ships are listed in BUILTIN_CONSUMERS as they are built (media processing, webhooks, the
Slack mirror, email notifications, bots); modules named in PARLEY_EXTRA_CONSUMERS add theirs through
a CONSUMERS list, which is how tests and benchmarks plug in without shipping in production.
"""

from __future__ import annotations

from parley.config import Settings
from parley.outbox.consumers import Consumer, ConsumerRegistry, consumers_from_modules
from workers.email_tasks import EMAIL_CONSUMER
from workers.media_consumers import MEDIA_CONSUMERS
from workers.webhook_tasks import WEBHOOK_CONSUMER

BUILTIN_CONSUMERS: tuple[Consumer, ...] = (*MEDIA_CONSUMERS, WEBHOOK_CONSUMER, EMAIL_CONSUMER)


def build_registry(settings: Settings) -> ConsumerRegistry:
    return ConsumerRegistry((*BUILTIN_CONSUMERS, *consumers_from_modules(settings.extra_consumers)))
