"""A short-lived, per-process cache of who a bearer token belongs to.

Every request authenticates, and a database lookup per request is a round trip and a transaction
the send path can do without. An entry lives `ttl` seconds at most. Revocation is visible at once
on every API process: the process that revokes a token drops its user's entries before it answers,
and tells the others over the realtime bus (`credentials_changed`), which drop them on receipt. If
the bus is down, another process may accept a revoked token for at most `ttl` seconds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from parley.models import User

CREDENTIALS_CHANGED = "credentials_changed"  # bus message kind: {"kind", "user_id"}


class TokenCache:
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        # token hash -> (expires at (monotonic), the user's column values)
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        # Bumped by every forget_user: a lookup that began before a revocation must not put back
        # what the revocation removed (see put).
        self.generation = 0

    def get(self, token_hash: str) -> User | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        expires, values = entry
        if expires < time.monotonic():
            del self._entries[token_hash]
            return None
        # A fresh transient object per request: no request can change what another one sees.
        return User(**values)

    def put(self, token_hash: str, user: User, generation: int) -> None:
        """Remember a lookup's answer, unless credentials changed since it began (`generation`, read
        before the lookup): its answer may predate a revocation."""
        if self._ttl <= 0 or generation != self.generation:
            return
        values = {column.key: getattr(user, column.key) for column in User.__table__.columns}
        self._entries[token_hash] = (time.monotonic() + self._ttl, values)
        self._entries.move_to_end(token_hash)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget_user(self, user_id: str) -> None:
        self.generation += 1
        for token_hash in [h for h, (_, values) in self._entries.items() if values["id"] == user_id]:
            del self._entries[token_hash]
