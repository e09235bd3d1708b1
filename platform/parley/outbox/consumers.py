"""Consumers: who wants which events, and the registry that answers "who takes this event?"."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from parley.events import EventType, parse_payload
from parley.models import Event

MAX_CONSUMER_NAME = 100  # consumer_receipts.consumer


class WorkKind(enum.StrEnum):
    """Kinds of work, one queue each, so slow media jobs never hold up a webhook, and workers can be
    scaled per kind. EVENTS is the dispatcher's own: it never waits behind a consumer's task."""

    EVENTS = "events"
    MEDIA = "media"
    WEBHOOKS = "webhooks"
    MIRROR = "mirror"
    EMAIL = "email"


@dataclass(frozen=True)
class EventDelivery:
    """What a consumer is handed: one committed event."""

    event_id: int
    type: str
    conversation_id: str | None
    payload: dict[str, Any]
    # The event's id. It grows with every event, so within a conversation it orders events; an
    # event written after another committed always has the larger sequence.
    sequence: int
    # The users the event concerns, as the service that wrote it named them (events.audience).
    audience: tuple[str, ...] = ()

    @classmethod
    def of(cls, event: Event) -> EventDelivery:
        return cls(
            event_id=event.id,
            type=event.type,
            conversation_id=event.conversation_id,
            payload=dict(event.payload),
            sequence=event.id,
            audience=tuple(event.audience or ()),
        )

    @property
    def data(self) -> BaseModel:
        """The payload read back as its typed model (parley.events.PAYLOADS)."""
        return parse_payload(self.type, self.payload)


# Runs inside the transaction that records the consumer's receipt: it only reads and writes rows
# through the session, which commit together with the receipt, or not at all.
Handler = Callable[[Session, EventDelivery], None]
# Runs after that transaction committed, with the deliveries the handler took (never on a
# redelivery that found its receipt): the adapter's turn to talk to the outside world (HTTP, SMTP,
# Slack, storage, a follow-up task), from the rows the handler wrote. It must be idempotent and
# quick; if it fails, the rows are there for the consumer's own sweep to pick up.
AfterCommit = Callable[[Sequence[EventDelivery]], None]


@dataclass(frozen=True)
class Consumer:
    name: str  # stable: receipts are keyed by it, so a renamed consumer is a new one (no receipts)
    event_types: frozenset[EventType]
    handle: Handler
    kind: WorkKind  # its queue; any but EVENTS
    after_commit: AfterCommit | None = None
    # True: events of one conversation reach this consumer strictly in sequence order (a task waits,
    # by retrying shortly, until the conversation's previous event has this consumer's receipt).
    ordered: bool = False
    soft_time_limit: float = 60.0  # raises SoftTimeLimitExceeded in the handler: counted as a failure
    time_limit: float = 90.0  # the worker process is killed
    max_retries: int = 8

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_CONSUMER_NAME:
            raise ValueError(f"consumer name must be 1 to {MAX_CONSUMER_NAME} characters: {self.name!r}")
        if not self.event_types:
            raise ValueError(f"consumer {self.name} takes no event types")
        unknown = {str(t) for t in self.event_types} - {t.value for t in EventType}
        if unknown:
            raise ValueError(f"consumer {self.name} names unknown event types: {sorted(unknown)}")
        if self.kind is WorkKind.EVENTS:
            raise ValueError(f"consumer {self.name}: the events queue is the dispatcher's; pick another kind")
        if not 0 < self.soft_time_limit < self.time_limit:
            raise ValueError(f"consumer {self.name}: need 0 < soft_time_limit < time_limit")


@dataclass(frozen=True)
class ConsumerRegistry:
    consumers: tuple[Consumer, ...]
    _by_type: dict[str, tuple[Consumer, ...]] = field(init=False, repr=False)
    _by_name: dict[str, Consumer] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Consumer] = {}
        for consumer in self.consumers:
            if consumer.name in by_name:
                raise ValueError(f"two consumers are named {consumer.name!r}")
            by_name[consumer.name] = consumer
        by_type = {
            t.value: tuple(c for c in self.consumers if t in c.event_types) for t in EventType
        }
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_type", by_type)

    def for_type(self, event_type: str) -> tuple[Consumer, ...]:
        return self._by_type.get(event_type, ())

    def get(self, name: str) -> Consumer | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Consumer]:
        return iter(self.consumers)


def consumers_from_modules(module_names: Sequence[str]) -> list[Consumer]:
    """The consumers listed in each module's CONSUMERS sequence."""
    found: list[Consumer] = []
    for name in module_names:
        module = import_module(name)
        listed = getattr(module, "CONSUMERS", None)
        if listed is None:
            raise ValueError(f"module {name} has no CONSUMERS list")
        for consumer in listed:
            if not isinstance(consumer, Consumer):
                raise ValueError(f"{name}.CONSUMERS holds {consumer!r}, not a Consumer")
            found.append(consumer)
    return found
