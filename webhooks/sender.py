"""One delivery attempt: sign, POST, judge nothing. What the answer means (success, retry,
disable) is decided by parley.services.webhook_deliveries when the attempt is recorded."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from parley.models import utcnow
from parley.services.webhook_deliveries import AttemptResult, ClaimedDelivery
from webhooks.signing import webhook_headers
from webhooks.ssrf import UrlGuard, UrlNotAllowed

USER_AGENT = "Parley-Webhooks/1"


async def send(
    http: aiohttp.ClientSession, guard: UrlGuard, claimed: ClaimedDelivery, *, timeout: float, excerpt_bytes: int
) -> AttemptResult:
    attempted_at = utcnow()
    started = time.perf_counter()

    def result(**outcome: object) -> AttemptResult:
        elapsed = round((time.perf_counter() - started) * 1000)
        return AttemptResult(claimed.delivery_id, claimed.endpoint_id, claimed.attempt, attempted_at, elapsed, **outcome)  # type: ignore[arg-type]

    if not claimed.secrets:
        return result(error="the signing secret cannot be decrypted (was PARLEY_SECRET_KEY changed?)")
    try:
        _check_literal_address(guard, claimed.url)
        headers = webhook_headers(claimed.secrets, claimed.delivery_id, int(time.time()), claimed.body)
        headers["user-agent"] = USER_AGENT
        async with asyncio.timeout(timeout):
            async with http.post(claimed.url, data=claimed.body, headers=headers, allow_redirects=False) as response:
                excerpt = await _read_up_to(response, excerpt_bytes)
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                location = response.headers.get("Location", "")
    except TimeoutError:
        return result(error=f"no answer within {timeout:g} s")
    except UrlNotAllowed as exc:
        return result(error=exc.message)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return result(error=f"{type(exc).__name__}: {exc}"[:500])
    error = None
    if 300 <= status < 400:
        error = f"redirects are not followed (Location: {location[:200]})"
    elif not 200 <= status < 300:
        error = f"HTTP {status}"
    return result(status_code=status, response_excerpt=excerpt, error=error, retry_after_seconds=retry_after)


def _check_literal_address(guard: UrlGuard, url: str) -> None:
    """aiohttp connects to a literal IP without asking the resolver, so check it here."""
    target = guard.target(url)
    try:
        address = ipaddress.ip_address(target.host)
    except ValueError:
        return
    guard.check_address(address, target.host)


async def _read_up_to(response: aiohttp.ClientResponse, limit: int) -> str:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = await response.content.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
