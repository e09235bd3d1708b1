"""Where presence is kept: which connections each user has, until when each counts, and when the
user was last seen. In Redis when API processes share it; in memory when embedded.

Every connection carries an expiry. A live connection's process pushes it forward every few
seconds (a heartbeat); a closed one is given `now + grace`, so a reload within the grace period
never shows the user offline; a crashed process simply stops refreshing, and its connections run
out within the TTL. A user is online while any of their connections has not expired. `sweep`
finds the users whose last connection has just expired and reports each of them exactly once,
even when several processes sweep at the same moment.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis


@dataclass(frozen=True)
class PresenceState:
    online: bool
    last_seen: float | None  # epoch seconds


class PresenceStore(Protocol):
    async def hold(self, user_id: str, connection_id: str, until: float) -> bool:
        """Count the connection until `until`; True if this made the user online."""
        ...

    async def refresh(self, held: Iterable[tuple[str, str]], until: float) -> None: ...

    async def sweep(self, now: float) -> list[tuple[str, float]]:
        """Users who went offline, with when they were last seen; each is reported once."""
        ...

    async def state(self, user_id: str) -> PresenceState: ...


class MemoryPresenceStore:
    def __init__(self) -> None:
        self._connections: dict[str, dict[str, float]] = {}
        self._last_seen: dict[str, float] = {}

    async def hold(self, user_id: str, connection_id: str, until: float) -> bool:
        connections = self._connections.setdefault(user_id, {})
        came_online = not connections
        connections[connection_id] = until
        self._last_seen[user_id] = time.time()
        return came_online

    async def refresh(self, held: Iterable[tuple[str, str]], until: float) -> None:
        now = time.time()
        for user_id, connection_id in held:
            if user_id in self._connections:
                self._connections[user_id][connection_id] = until
                self._last_seen[user_id] = now

    async def sweep(self, now: float) -> list[tuple[str, float]]:
        gone: list[tuple[str, float]] = []
        for user_id, connections in list(self._connections.items()):
            for connection_id, until in list(connections.items()):
                if until <= now:
                    del connections[connection_id]
            if not connections:
                del self._connections[user_id]
                gone.append((user_id, self._last_seen.get(user_id, now)))
        return gone

    async def state(self, user_id: str) -> PresenceState:
        return PresenceState(online=user_id in self._connections, last_seen=self._last_seen.get(user_id))


_KEY = "parley:presence:"
CONNECTIONS = _KEY + "conns:"  # zset per user: connection id -> expiry
DEADLINES = _KEY + "deadlines"  # zset: user id -> latest expiry among their connections
LAST_SEEN = _KEY + "seen:"  # string per user: epoch seconds

# KEYS: connections, deadlines, last seen. ARGV: user, connection, until, now.
# Returns 1 if the user had no unexpired connection before.
_HOLD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local was_online = redis.call('ZCARD', KEYS[1]) > 0
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
redis.call('ZADD', KEYS[2], latest, ARGV[1])
redis.call('SET', KEYS[3], ARGV[4])
if was_online then return 0 end
return 1
"""

# KEYS: deadlines. ARGV: now, connections prefix, last-seen prefix.
# For each user whose deadline passed: drop expired connections; if none is left the user went
# offline (returned with their last seen time), else the deadline moves to the latest expiry.
_SWEEP = """
local gone = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, user in ipairs(due) do
  local conns = ARGV[2] .. user
  redis.call('ZREMRANGEBYSCORE', conns, '-inf', ARGV[1])
  local latest = redis.call('ZRANGE', conns, -1, -1, 'WITHSCORES')[2]
  if latest then
    redis.call('ZADD', KEYS[1], latest, user)
  else
    redis.call('ZREM', KEYS[1], user)
    local seen = redis.call('GET', ARGV[3] .. user) or ARGV[1]
    table.insert(gone, user)
    table.insert(gone, seen)
  end
end
return gone
"""


class RedisPresenceStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._hold = client.register_script(_HOLD)
        self._sweep = client.register_script(_SWEEP)

    async def hold(self, user_id: str, connection_id: str, until: float) -> bool:
        keys = [CONNECTIONS + user_id, DEADLINES, LAST_SEEN + user_id]
        return bool(await self._hold(keys=keys, args=[user_id, connection_id, until, time.time()]))

    async def refresh(self, held: Iterable[tuple[str, str]], until: float) -> None:
        now = time.time()
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id, connection_id in held:
                pipe.zadd(CONNECTIONS + user_id, {connection_id: until})
                # GT: never pull a deadline in; a sweep recomputes it from the connections anyway.
                pipe.zadd(DEADLINES, {user_id: until}, gt=True)
                pipe.set(LAST_SEEN + user_id, now)
            await pipe.execute()

    async def sweep(self, now: float) -> list[tuple[str, float]]:
        flat = await self._sweep(keys=[DEADLINES], args=[now, CONNECTIONS, LAST_SEEN])
        return [(_text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def state(self, user_id: str) -> PresenceState:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zcount(CONNECTIONS + user_id, f"({time.time()}", "+inf")
            pipe.get(LAST_SEEN + user_id)
            live, seen = await pipe.execute()
        return PresenceState(online=live > 0, last_seen=float(seen) if seen is not None else None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
