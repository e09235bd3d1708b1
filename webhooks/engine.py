"""The delivery engine: one per worker process, sending webhooks concurrently.

Why not one Celery task per HTTP call: a worker process runs one task at a time, so a handful of
receivers that hang until the timeout would hold every process of the pool, and every other
endpoint's deliveries (and every other consumer) would wait behind them. Here a worker process
runs one asyncio loop in a background thread, started by the first webhook task the process runs
(a fan-out or beat's sweep, see workers/webhook_tasks.py). The loop claims due deliveries (the
claim caps deliveries in flight per endpoint), sends up to PARLEY_WEBHOOK_MAX_IN_FLIGHT at once,
and records finished attempts in batches. A hanging receiver occupies one coroutine and at most
its endpoint's cap, nothing else.

Nothing is lost when the process dies: a claimed delivery is a lease in the database, which lapses
after the timeout plus a margin and is then claimed again (one more attempt). Database work runs
on one helper thread so the loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import aiohttp
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.event_loop import new_event_loop
from parley.models import utcnow
from parley.services.webhook_deliveries import AttemptResult, Claim, ClaimedDelivery, claim_due, record_attempts
from webhooks.sender import send
from webhooks.ssrf import UrlGuard
from webhooks.transport import client_session

log = logging.getLogger("parley.webhooks")
T = TypeVar("T")

CLAIM_BATCH = 100
# Without a wake-up, look for due work this often (retries coming due, manual retries and replays
# written by the API, lapsed claims of a dead worker).
IDLE_POLL_SECONDS = 1.0
MIN_WAIT_SECONDS = 0.01
ERROR_PAUSE_SECONDS = 1.0
START_TIMEOUT_SECONDS = 10.0
# The engine thread shares its process with Celery's task thread (the fan-out, the dispatcher). With
# Python's default 5 ms GIL switch interval, every database round trip of a task waits up to 5 ms
# behind the engine's CPU work; 1 ms keeps tasks quick while deliveries flow.
GIL_SWITCH_INTERVAL_SECONDS = 0.001


class DeliveryEngine:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.guard = UrlGuard(settings)
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-db")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wanted: asyncio.Event | None = None
        self._ready = threading.Event()
        self._results: list[AttemptResult] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._main, name="webhook-delivery", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_SECONDS))
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS):
            raise RuntimeError("the webhook delivery engine did not start")

    def wake(self) -> None:
        """Look for due deliveries now. Safe from any thread."""
        if self._loop is not None and self._wanted is not None:
            self._loop.call_soon_threadsafe(self._wanted.set)

    def _main(self) -> None:
        # uvloop where installed, as the API: less CPU per request, which the task thread shares.
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wanted = asyncio.Event()
        self._ready.set()
        settings = self.settings
        async with client_session(self.guard, max_connections=settings.webhook_max_in_flight) as http:
            while True:
                self._wanted.clear()
                try:
                    await self._record_finished()
                    wait = await self._claim_and_start(http)
                except Exception:  # the database went away, say: keep the engine, try again shortly
                    log.exception("webhooks.engine_error")
                    wait = ERROR_PAUSE_SECONDS
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wanted.wait(), wait)

    async def _record_finished(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            await self._in_db(record_attempts, self.sessions, self.settings, batch)
        except Exception:
            # One by one, so one unrecordable answer does not take the others with it. What still
            # fails is dropped: its claim lapses and the delivery is attempted again.
            log.exception("webhooks.record_failed", extra={"attempts": len(batch)})
            for result in batch:
                try:
                    await self._in_db(record_attempts, self.sessions, self.settings, [result])
                except Exception:
                    log.error("webhooks.record_dropped", extra={"delivery_id": result.delivery_id})

    async def _claim_and_start(self, http: aiohttp.ClientSession) -> float:
        """Start what is due; returns how long to wait before looking again (0: at once)."""
        free = self.settings.webhook_max_in_flight - len(self._in_flight)
        if free <= 0:
            return IDLE_POLL_SECONDS  # a finishing delivery wakes the loop
        limit = min(free, CLAIM_BATCH)
        claim: Claim = await self._in_db(claim_due, self.sessions, self.settings, limit)
        for claimed in claim.deliveries:
            task = asyncio.create_task(self._attempt(http, claimed))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if len(claim.deliveries) == limit:
            return 0.0
        if claim.next_due_at is None:
            return IDLE_POLL_SECONDS
        until_due = (claim.next_due_at - utcnow()).total_seconds()
        return min(IDLE_POLL_SECONDS, max(MIN_WAIT_SECONDS, until_due))

    async def _attempt(self, http: aiohttp.ClientSession, claimed: ClaimedDelivery) -> None:
        try:
            result = await send(
                http,
                self.guard,
                claimed,
                timeout=self.settings.webhook_timeout_seconds,
                excerpt_bytes=self.settings.webhook_response_excerpt_bytes,
            )
        except Exception as exc:  # a bug here must still end the attempt, not leave it to the lease
            log.exception("webhooks.send_failed", extra={"delivery_id": claimed.delivery_id})
            result = AttemptResult(claimed.delivery_id, claimed.endpoint_id, claimed.attempt, utcnow(), None,
                                   error=f"internal error: {type(exc).__name__}")
        self._results.append(result)
        assert self._wanted is not None
        self._wanted.set()

    async def _in_db(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, function, *args)


_engine: DeliveryEngine | None = None
_engine_pid = 0
_engine_lock = threading.Lock()


def process_engine(settings: Settings, sessions: sessionmaker[Session]) -> DeliveryEngine:
    """This process's engine, started on first use (after the pool forked: threads do not survive
    a fork, so a child never inherits its parent's engine)."""
    global _engine, _engine_pid
    with _engine_lock:
        if _engine is None or _engine_pid != os.getpid() or not _engine.alive:
            _engine = DeliveryEngine(settings, sessions)
            _engine.start()
            _engine_pid = os.getpid()
        return _engine
