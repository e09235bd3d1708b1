"""One client's WebSocket: a bounded queue in front of the socket, drained by one writer task.

Frames for a connection never wait on each other's sockets: the hub only puts frames on queues.
A client that stops reading fills its own queue (or takes too long over one frame) and is
disconnected with close code 4008, so it costs bounded memory and delays no one else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from parley.ids import new_id
from parley.realtime.frames import CLOSE_SLOW_CONSUMER

log = logging.getLogger("parley.realtime")

CLOSE_TIMEOUT_SECONDS = 1.0


@dataclass(eq=False)
class Connection:
    user_id: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    queue_size: int
    send_timeout: float
    id: str = field(default_factory=new_id)
    # The last outbox event put on this connection; nothing at or below it is sent again, which is
    # what makes the seam between replay and live events free of duplicates.
    last_event_id: int = 0
    replaying: bool = True
    closed: bool = False
    _pending: list[tuple[int | None, str]] = field(default_factory=list)
    _queue: asyncio.Queue[str] = field(init=False)
    _writer: asyncio.Task[None] | None = None
    _typing_relayed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)

    def offer(self, frame: str, event_id: int | None = None) -> None:
        """Queue a frame without waiting. While the connection is still replaying, live frames are
        held back and sent after the replay."""
        if self.closed:
            return
        if self.replaying:
            if len(self._pending) >= self.queue_size:
                self.drop_slow("live events overflowed while replaying")
            else:
                self._pending.append((event_id, frame))
            return
        if event_id is not None:
            if event_id <= self.last_event_id:
                return
            self.last_event_id = event_id
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.drop_slow("send queue full")

    async def send_replayed(self, frame: str, event_id: int | None = None) -> None:
        """Send during the replay, waiting for the socket: a long replay goes at the client's pace."""
        if event_id is not None:
            self.last_event_id = max(self.last_event_id, event_id)
        await asyncio.wait_for(self.ws.send_str(frame), self.send_timeout)

    async def go_live(self) -> None:
        """End the replay: send what arrived meanwhile (skipping what the replay covered), then let
        the writer take over."""
        while self._pending:
            held, self._pending = self._pending, []
            for event_id, frame in held:
                if event_id is not None:
                    if event_id <= self.last_event_id:
                        continue
                    self.last_event_id = event_id
                await asyncio.wait_for(self.ws.send_str(frame), self.send_timeout)
        self.replaying = False  # no await since the loop saw _pending empty: nothing slips between
        self._writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.id}")

    def allow_typing(self, conversation_id: str, min_interval: float) -> bool:
        now = time.monotonic()
        if now - self._typing_relayed.get(conversation_id, float("-inf")) < min_interval:
            return False
        self._typing_relayed[conversation_id] = now
        return True

    async def _write(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                await asyncio.wait_for(self.ws.send_str(frame), self.send_timeout)
        except TimeoutError:
            self.drop_slow("a frame waited too long for the client")
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; the handler's receive loop sees it and cleans up

    def drop_slow(self, reason: str) -> None:
        if self.closed:
            return
        log.warning("realtime.slow_consumer", extra={"user_id": self.user_id, "connection_id": self.id, "reason": reason})
        asyncio.get_running_loop().create_task(self.close(CLOSE_SLOW_CONSUMER, b"slow_consumer"))

    async def close(self, code: int, message: bytes) -> None:
        if self.closed:
            return
        self.closed = True
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT_SECONDS)
        except (TimeoutError, ConnectionError, RuntimeError):
            # A client that reads nothing never lets the close frame out: cut the socket.
            if self.transport is not None and not self.transport.is_closing():
                self.transport.abort()

    async def finish(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
