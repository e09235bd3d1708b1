"""What a worker process needs to run Parley's tasks: settings, the consumer registry and a
database engine of its own."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import redis

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.db import create_sync_db_engine, set_events_committed_hook, sync_session_factory
from parley.outbox.consumers import ConsumerRegistry
from parley.realtime.bus import CHANNEL as BUS_CHANNEL
from workers.consumers import build_registry

log = logging.getLogger("parley.workers")


class WorkerContext:
    def __init__(self, settings: Settings, wake_dispatcher: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self._wake_dispatcher = wake_dispatcher
        self._redis: redis.Redis | None = None
        self._registry: ConsumerRegistry | None = None
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._pid = 0

    @property
    def registry(self) -> ConsumerRegistry:
        if self._registry is None:
            self._registry = build_registry(self.settings)
        return self._registry

    @property
    def sessions(self) -> sessionmaker[Session]:
        # The prefork pool forks children from the main process: a connection opened before the
        # fork must never be used by two processes, so each process opens its own engine.
        if self._sessions is None or self._pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)  # leave the parent's connections to the parent
            self._engine = create_sync_db_engine(self.settings)
            self._sessions = sync_session_factory(self._engine)
            set_events_committed_hook(self._sessions, self._events_committed)
            self._redis = None  # the parent's connection stays the parent's
            self._pid = os.getpid()
        return self._sessions

    def _events_committed(self) -> None:
        """The worker side of the one wake-up path: a consumer or task that committed events (an
        upload processed, a reply sent from Slack) wakes the dispatcher through the broker and
        every API process's realtime tail through the bus, instead of leaving them to the sweep
        and the poll."""
        self._wake_dispatcher()
        if self.settings.redis_url:
            try:
                if self._redis is None:
                    self._redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
                self._redis.publish(BUS_CHANNEL, json.dumps({"kind": "wake", "node": "worker"}))
            except redis.RedisError as exc:
                log.warning("outbox.bus_wake_failed", extra={"error": repr(exc)})

    def close(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = self._sessions = None
