"""The HTTP client webhooks are sent with: aiohttp, connecting only to addresses the SSRF guard
checked at that moment.

aiohttp asks its resolver for a host's addresses at each new connection and connects to exactly
what it returns, while the request keeps the URL's host for the Host header, TLS SNI and
certificate verification. So the resolver here resolves, checks every address (refusing the
whole host if one is refused) and returns only those: there is no second lookup an attacker's
DNS could answer differently (DNS rebinding). Its DNS cache is off, so every connection is
checked afresh; literal IP hosts never reach a resolver, so the sender checks those itself.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from webhooks.ssrf import UrlGuard


class GuardedResolver(AbstractResolver):
    def __init__(self, guard: UrlGuard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await asyncio.get_running_loop().run_in_executor(None, self.guard.resolve, host, port)
        return [
            ResolveResult(hostname=host, host=address, port=port, family=found_family, proto=0,
                          flags=socket.AI_NUMERICHOST)
            for found_family, address in addresses
        ]

    async def close(self) -> None:
        return None


def client_session(guard: UrlGuard, *, max_connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(guard),
        use_dns_cache=False,
        family=socket.AF_UNSPEC,
        limit=max_connections,
        # No per-host limit: endpoints of one host (one receiver, many paths) would share it and a
        # hanging one would hold the others back. The claim caps deliveries per endpoint instead.
        limit_per_host=0,
    )
    # No cookies kept between receivers; no proxy from the environment (it would bypass the guard).
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
