"""Time-ordered string ids (ULIDs), opaque to clients.

ULIDs sort by creation time, so "newest first" and keyset pagination can order by id alone.
Within one process they are also strictly increasing: two ids made in the same millisecond
differ in their random part by one, so messages sent back to back keep their order.
"""

from __future__ import annotations

import os
import re
import threading
import time

from ulid import ULID

ID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

_RANDOM_BITS = 80
_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def new_id() -> str:
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _last_random = now_ms, int.from_bytes(os.urandom(10), "big") >> 1
        else:
            # Same millisecond (or the clock stepped back): stay on the last timestamp and count up.
            _last_random = (_last_random + 1) % (1 << _RANDOM_BITS)
        value = (_last_ms << _RANDOM_BITS) | _last_random
    return str(ULID.from_int(value))


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
