"""One queue per kind of work, so a backlog of slow jobs (thumbnails, webhooks to a slow endpoint)
never delays another kind, and workers can be pointed at the kinds they should run
(`parley worker -Q media`). `events` carries only the dispatcher's tasks (nudges and sweeps): a
nudge never waits behind consumer tasks, which keeps the time from commit to dispatch short."""

from __future__ import annotations

from kombu import Queue

from parley.outbox.consumers import WorkKind

QUEUES: tuple[Queue, ...] = tuple(Queue(kind.value, routing_key=kind.value) for kind in WorkKind)
DEFAULT_QUEUE = WorkKind.EVENTS.value
