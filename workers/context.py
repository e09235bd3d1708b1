"""What a worker process needs to run Parley's tasks: settings, the consumer registry and a
database engine of its own."""

from __future__ import annotations

import os

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.outbox.consumers import ConsumerRegistry
from workers.consumers import build_registry


class WorkerContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
            self._pid = os.getpid()
        return self._sessions

    def close(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = self._sessions = None
