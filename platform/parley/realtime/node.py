"""One API process's realtime machinery: it follows the outbox, fans events out to its own
connections, keeps presence, relays typing, and talks to the other processes over the bus.

Every process reads committed events from the outbox itself, in id order (ids grow in commit
order), starting from the newest event when it starts. A write through this process's API wakes
its tail at once and tells the others over the bus to look too; anything committed elsewhere (a
worker, a lost wake-up) is found by a poll every `realtime_poll_seconds`. Nothing depends on Redis
being up: without it, events still arrive, by the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.config import Settings
from parley.db import run_service
from parley.ids import new_id
from parley.realtime.bus import Bus, BusMessage, LocalBus, RedisBus
from parley.realtime.connection import Connection
from parley.realtime.frames import CLOSE_GOING_AWAY, CLOSE_SUSPENDED
from parley.realtime.hub import Hub
from parley.realtime.presence_store import MemoryPresenceStore, PresenceStore, RedisPresenceStore
from parley.realtime.schemas import PresenceOut
from parley.services.blocks import blocked_by
from parley.services.event_feed import events_after, latest_event_id, partner_in, partners_of

log = logging.getLogger("parley.realtime")

# Bus message kind {"kind", "user_id"}: the user blocked or unblocked someone; every process reloads
# whom that user blocked, so typing and presence stop (or resume) reaching them at once.
BLOCKS_CHANGED = "blocks_changed"
# Bus message kind {"kind", "user_id"}: a moderator suspended the user; every process closes the
# user's WebSockets (their cached credentials go through credentials_changed).
USER_SUSPENDED = "user_suspended"
TAIL_BATCH = 500
TAIL_ERROR_BACKOFF_SECONDS = 1.0
# How long stop() lets the tail finish a database call it is in before cancelling it anyway.
TAIL_STOP_GRACE_SECONDS = 5.0


def presence_out(user_id: str, *, online: bool, last_seen: float | None) -> PresenceOut:
    """The one shape of presence: REST and the WebSocket's presence frames alike."""
    return PresenceOut(
        user_id=user_id,
        status="online" if online else "offline",
        last_seen_at=None if last_seen is None else datetime.fromtimestamp(last_seen, UTC),
    )


class RealtimeNode:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.node_id = new_id()
        self.hub = Hub()
        # The last event id handed to the hub; None until the database has told us where it ends
        # (the process may start while the database is away).
        self.position: int | None = None
        self._redis: aioredis.Redis | None = None
        self.bus: Bus
        self.presence: PresenceStore
        if settings.redis_url:
            self._redis = aioredis.from_url(
                settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
            )
            self.bus = RedisBus(self._redis)
            self.presence = RedisPresenceStore(self._redis)
        else:
            self.bus = LocalBus()
            self.presence = MemoryPresenceStore()
        self._listeners: dict[str, Callable[[BusMessage], None]] = {}
        self.listen(BLOCKS_CHANGED, self._on_blocks_changed)
        self.listen(USER_SUSPENDED, self._on_user_suspended)
        self._wake = asyncio.Event()
        self._stopping = False
        self._announce = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start(self._on_bus_message, self._on_bus_reconnect)
        self._wake.set()  # find where the outbox ends straight away
        self._tasks = [
            asyncio.create_task(self._follow_outbox(), name="realtime-tail"),
            asyncio.create_task(self._announce_commits(), name="realtime-announce"),
            asyncio.create_task(self._keep_presence(), name="realtime-presence"),
        ]

    async def stop(self) -> None:
        await self.close_all(CLOSE_GOING_AWAY, b"server shutting down")
        # Let the tail leave between database calls instead of cancelling one midway: aiosqlite
        # cannot abandon a connection it is still opening, and its thread would later call into
        # this event loop after it has closed ("Event loop is closed").
        self._stopping = True
        self._wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks[:1], timeout=TAIL_STOP_GRACE_SECONDS)  # the tail
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.stop()
        if self._redis is not None:
            await self._redis.aclose()

    async def close_all(self, code: int, message: bytes) -> None:
        await asyncio.gather(*(c.close(code, message) for c in self.hub.connections()), return_exceptions=True)

    # --- events ---------------------------------------------------------------------------------

    def events_committed(self) -> None:
        """This process committed outbox events: follow them now, and tell the other processes."""
        self._wake.set()
        self._announce.set()

    async def _announce_commits(self) -> None:
        # One bus message per burst of commits, however many requests made it.
        while True:
            await self._announce.wait()
            self._announce.clear()
            await self.bus.publish({"kind": "wake", "node": self.node_id})

    async def _follow_outbox(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.realtime_poll_seconds)
            self._wake.clear()
            if self._stopping:
                return
            try:
                if self.position is None:
                    self.position = await run_service(self.sessions, latest_event_id)
                while True:
                    batch = await run_service(self.sessions, events_after, self.position, TAIL_BATCH)
                    for event in batch:
                        self.position = event.id  # first: one event that cannot be delivered never stalls the rest
                        try:
                            self.hub.deliver_event(event)
                        except Exception:
                            log.exception("realtime.delivery_failed", extra={"event_id": event.id})
                    if len(batch) < TAIL_BATCH:
                        break
            except Exception as exc:  # the database may be briefly away; the tail must outlive it
                log.warning("realtime.tail_failed", extra={"error": repr(exc), "position": self.position})
                await asyncio.sleep(TAIL_ERROR_BACKOFF_SECONDS)

    # --- the bus --------------------------------------------------------------------------------

    def listen(self, kind: str, handler: Callable[[BusMessage], None]) -> None:
        """Hand bus messages of `kind` (this process's own included) to `handler`."""
        self._listeners[kind] = handler

    async def publish(self, message: BusMessage) -> None:
        """To every API process, this one included. Never raises: a bus outage is logged."""
        listener = self._listeners.get(str(message.get("kind")))
        if listener is not None and isinstance(self.bus, RedisBus):
            listener(message)  # here at once; RedisBus brings it back too, which is harmless
        await self.bus.publish(message)

    def _on_bus_message(self, message: BusMessage) -> None:
        kind = message.get("kind")
        if kind == "wake":
            if message.get("node") != self.node_id:
                self._wake.set()
        elif kind == "presence":
            self.hub.deliver_presence(str(message["user_id"]), message["data"])
        elif kind == "typing":
            self.hub.deliver_typing(str(message["to_user_id"]), str(message["conversation_id"]), message["data"])
        elif (listener := self._listeners.get(str(kind))) is not None:
            listener(message)

    def _on_user_suspended(self, message: BusMessage) -> None:
        task = asyncio.get_running_loop().create_task(self.close_user(str(message["user_id"])))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close_user(self, user_id: str) -> None:
        """Close every connection of `user_id` on this process (a suspension)."""
        user = self.hub.users.get(user_id)
        if user is None:
            return
        await asyncio.gather(*(c.close(CLOSE_SUSPENDED, b"suspended") for c in list(user.connections)), return_exceptions=True)

    def _on_blocks_changed(self, message: BusMessage) -> None:
        user_id = str(message["user_id"])
        if self.hub.has_user(user_id):
            task = asyncio.get_running_loop().create_task(self._reload_blocks(user_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def reload_blocks(self, user_id: str) -> None:
        """Whom `user_id` blocked, read again now (the process that changed it, before answering)."""
        if self.hub.has_user(user_id):
            self.hub.set_blocked(user_id, await run_service(self.sessions, blocked_by, user_id))

    async def _reload_blocks(self, user_id: str) -> None:
        try:
            self.hub.set_blocked(user_id, await run_service(self.sessions, blocked_by, user_id))
        except Exception as exc:
            log.warning("realtime.blocks_reload_failed", extra={"error": repr(exc)})

    def _on_bus_reconnect(self) -> None:
        # Wake-ups may have been lost while Redis was away, and this process's connections may have
        # expired there: look at the outbox now, and hold every connection again.
        self._wake.set()
        asyncio.get_running_loop().create_task(self._hold_all_again())

    # --- connections and presence ---------------------------------------------------------------

    async def attach(self, connection: Connection) -> None:
        """Register a new connection (held back while it replays) and count its user online."""
        partners = blocked = None
        if not self.hub.has_user(connection.user_id):
            partners = await run_service(self.sessions, partners_of, connection.user_id)
            blocked = await run_service(self.sessions, blocked_by, connection.user_id)
        self.hub.add(connection, partners, blocked)
        await self._hold(connection)

    async def detach(self, connection: Connection) -> None:
        self.hub.remove(connection)
        # Still counted for the grace period, so a reload does not show the user offline.
        until = time.time() + self.settings.presence_grace_seconds
        with contextlib.suppress(Exception):
            await self.presence.hold(connection.user_id, connection.id, until)

    async def _hold(self, connection: Connection) -> None:
        until = time.time() + self.settings.presence_ttl_seconds
        try:
            came_online = await self.presence.hold(connection.user_id, connection.id, until)
        except Exception as exc:
            log.warning("realtime.presence_failed", extra={"error": repr(exc)})
            return
        if came_online:
            await self._publish_presence(connection.user_id, online=True, last_seen=time.time())

    async def _hold_all_again(self) -> None:
        for connection in self.hub.connections():
            await self._hold(connection)

    async def _keep_presence(self) -> None:
        ttl = self.settings.presence_ttl_seconds
        # Sweep a few times per grace period (offline is reported at most a third of it late) and
        # refresh this process's connections three times per TTL.
        interval = max(0.1, min(ttl, max(self.settings.presence_grace_seconds, 0.3)) / 3)
        next_refresh = 0.0
        while True:
            await asyncio.sleep(interval)
            try:
                now = time.time()
                if now >= next_refresh:
                    held = [(c.user_id, c.id) for c in self.hub.connections()]
                    await self.presence.refresh(held, now + ttl)
                    next_refresh = now + ttl / 3
                for user_id, last_seen in await self.presence.sweep(now):
                    await self._publish_presence(user_id, online=False, last_seen=last_seen)
            except Exception as exc:
                log.warning("realtime.presence_failed", extra={"error": repr(exc)})

    async def _publish_presence(self, user_id: str, *, online: bool, last_seen: float) -> None:
        data = presence_out(user_id, online=online, last_seen=last_seen).model_dump(mode="json")
        await self.bus.publish({"kind": "presence", "user_id": user_id, "data": data})

    async def presence_of(self, user_id: str) -> PresenceOut:
        state = await self.presence.state(user_id)
        return presence_out(user_id, online=state.online, last_seen=state.last_seen)

    async def learn_conversation(self, user_id: str, conversation_id: str) -> str | None:
        """A conversation the hub has not heard of yet (created while the user was connecting)."""
        if len(conversation_id) > 64:
            return None
        partner_id = await run_service(self.sessions, partner_in, user_id, conversation_id)
        if partner_id is not None:
            self.hub.learn(user_id, conversation_id, partner_id)
        return partner_id

    # --- typing ---------------------------------------------------------------------------------

    async def relay_typing(self, connection: Connection, conversation_id: str, partner_id: str) -> None:
        expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.typing_ttl_seconds)
        data: dict[str, Any] = {
            "user_id": connection.user_id,
            "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
        }
        await self.bus.publish(
            {"kind": "typing", "to_user_id": partner_id, "conversation_id": conversation_id, "data": data}
        )
