"""The dispatcher's wake-up: after events committed, tell the dispatcher to look at the outbox now
instead of at the next sweep. The API's "events committed" hook calls `nudge()`.

A nudge is an optimisation, never a dependency: the event rows are already committed, and beat's
sweep dispatches anything a nudge missed. So `nudge()` only raises a flag and returns; one
background task publishes, in a thread (kombu's publish blocks), one publish at a time and at most
one per 20 ms. Nudges raised meanwhile are folded into the next one, which keeps the broker
traffic bounded however many requests arrive; a failed publish (broker down) is logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

from parley.config import Settings
from workers.broker import broker_config
from workers.queues import DEFAULT_QUEUE
from workers.task_names import DISPATCH_TASK

log = logging.getLogger("parley.outbox")

# By then the sweep has run several times: an older nudge is only work for nothing.
NUDGE_EXPIRES_SECONDS = 60
STOP_FLUSH_SECONDS = 2.0
NUDGE_CONNECT_TIMEOUT_SECONDS = 1.0
NUDGE_MIN_INTERVAL_SECONDS = 0.05


class OutboxNudger:
    def __init__(
        self,
        publish: Callable[[], None],
        close: Callable[[], None] = lambda: None,
        min_interval: float = NUDGE_MIN_INTERVAL_SECONDS,
    ) -> None:
        self._publish = publish
        self._close = close
        self._min_interval = min_interval
        self._wanted = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-nudge")
        self._runner: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> OutboxNudger:
        # A bare app that only publishes by task name: the API process imports no task module (and
        # through them no Pillow or PyAV).
        app = Celery("parley-api", set_as_current=False)
        app.conf.update(broker_config(settings), task_serializer="json", accept_content=["json"])
        # One connection attempt, not kombu's seconds of retries: while the broker is down, each
        # nudge fails at once, and a stopping API is not held up.
        app.conf.broker_connection_timeout = NUDGE_CONNECT_TIMEOUT_SECONDS
        app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}

        def publish() -> None:
            # No retries: the broker being down is exactly when the sweep is the better path.
            app.send_task(DISPATCH_TASK, queue=DEFAULT_QUEUE, retry=False, expires=NUDGE_EXPIRES_SECONDS)

        return cls(publish, close=app.close)

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="outbox-nudger")

    def nudge(self) -> None:
        self._wanted.set()

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        loop = asyncio.get_running_loop()
        # One last publish for a request that committed just before shutdown, then close the
        # broker connections, both after any publish still in flight and both bounded in time.
        if self._wanted.is_set():
            self._wanted.clear()
            await self._publish_within(loop, STOP_FLUSH_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._close), STOP_FLUSH_SECONDS)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self._publish_within(loop, None)
            # Under load, each dispatch then picks up the commits of this interval in one batch
            # rather than a worker running a dispatch task per request; when idle, the next nudge
            # still goes at once.
            await asyncio.sleep(self._min_interval)

    async def _publish_within(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._publish), timeout)
            self.sent += 1
        except Exception as exc:  # any failure means the same: drop it, the sweep covers
            self.failed += 1
            log.warning("outbox.nudge_failed", extra={"error": repr(exc)})
