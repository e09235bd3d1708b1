"""The bus that joins API processes: wake-ups ("events were committed"), presence changes and
typing. Redis pub/sub in the full stack; in-process when embedded (one API process).

The bus never carries the only copy of anything that matters: events live in the outbox table and
every process reads them from there, so a lost bus message delays an event by at most one poll
interval. Typing indicators are ephemeral by nature.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("parley.realtime")

BusMessage = dict[str, Any]
BusHandler = Callable[[BusMessage], None]
CHANNEL = "parley:realtime"
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0


class Bus(Protocol):
    async def start(self, handler: BusHandler, on_reconnect: Callable[[], None]) -> None: ...
    async def publish(self, message: BusMessage) -> None: ...
    async def stop(self) -> None: ...


class LocalBus:
    """One process: publishing hands the message straight to this process's handler."""

    def __init__(self) -> None:
        self._handler: BusHandler | None = None

    async def start(self, handler: BusHandler, on_reconnect: Callable[[], None]) -> None:
        self._handler = handler

    async def publish(self, message: BusMessage) -> None:
        if self._handler is not None:
            self._handler(message)

    async def stop(self) -> None:
        self._handler = None


class RedisBus:
    """Redis pub/sub. A Redis outage is logged, publishes are dropped, and the subscriber keeps
    reconnecting with backoff; once back, `on_reconnect` lets the node catch up."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._listener: asyncio.Task[None] | None = None

    async def start(self, handler: BusHandler, on_reconnect: Callable[[], None]) -> None:
        self._listener = asyncio.create_task(self._listen(handler, on_reconnect), name="realtime-bus")

    async def publish(self, message: BusMessage) -> None:
        try:
            await self._client.publish(CHANNEL, json.dumps(message, separators=(",", ":")))
        except (RedisError, OSError) as exc:
            log.warning("realtime.bus_publish_failed", extra={"kind": message.get("kind"), "error": repr(exc)})

    async def _listen(self, handler: BusHandler, on_reconnect: Callable[[], None]) -> None:
        delay = RECONNECT_MIN_SECONDS
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if not first:
                    log.info("realtime.bus_reconnected")
                    on_reconnect()
                first, delay = False, RECONNECT_MIN_SECONDS
                async for raw in pubsub.listen():
                    try:
                        message = json.loads(raw["data"])
                    except (TypeError, ValueError):
                        continue
                    if not isinstance(message, dict):
                        continue
                    try:
                        handler(message)
                    except Exception:  # a malformed message must not end the subscription
                        log.exception("realtime.bus_message_failed", extra={"kind": message.get("kind")})
            except (RedisError, OSError) as exc:
                log.warning("realtime.bus_disconnected", extra={"error": repr(exc), "retry_in": delay})
                first = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
