"""The API's event loop: uvloop where it is installed (Linux and macOS), asyncio's own elsewhere.
uvloop's libuv-based loop spends noticeably less CPU per request than the pure-Python one."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
