"""A real webhook receiver for the tests: an aiohttp server on 127.0.0.1, in a thread of its own
(the worker tests poll with blocking waits), that verifies every delivery twice, with the
`standardwebhooks` package and with an HMAC computed here, and answers as each test scripts it.

Each endpoint is a path (`receiver.url("name")`); its script is a list of answers used in turn,
the last one repeating (default: 200). An answer can hang until the test releases it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.workers.conftest import free_port

START_TIMEOUT = 10.0
HANG_LIMIT_SECONDS = 120.0  # a hanging answer never outlives the test run by long


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"
    hang: bool = False  # wait until release() (or the client gives up) before answering


@dataclass(frozen=True)
class Received:
    name: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    # secret -> (verified by standardwebhooks, verified by the independent HMAC check)
    verified: dict[str, tuple[bool, bool]]

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


def independent_hmac_check(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks' signature, computed from the spec without the package."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1) for s in headers.get("webhook-signature", "").split(" ")]
    return any(version == "v1" and hmac.compare_digest(sig, expected) for version, sig in offered)


def package_check(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._secrets: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def script(self, name: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts[name] = list(answers)

    def expect_secrets(self, name: str, *secrets: str) -> None:
        with self._lock:
            self._secrets[name] = list(secrets)

    def release(self) -> None:
        """Let every hanging answer go (and later ones not hang)."""
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def requests(self, name: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.name == name]

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            pytest.fail("the webhook receiver did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release, self._stop = asyncio.Event(), asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{name}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            secrets = list(self._secrets.get(name, []))
            script = self._scripts.get(name, [])
            answer = script.pop(0) if len(script) > 1 else (script[0] if script else Answer())
        verified = {s: (package_check(s, headers, body), independent_hmac_check(s, headers, body)) for s in secrets}
        with self._lock:
            self.received.append(Received(name, headers, body, time.monotonic(), verified))
        if answer.hang:
            assert self._release is not None
            try:
                await asyncio.wait_for(self._release.wait(), HANG_LIMIT_SECONDS)
            except TimeoutError:
                pass
        return web.Response(status=answer.status, headers=answer.headers, text=answer.body)


def running_receiver() -> Iterator[Receiver]:
    """For a fixture: a started receiver, released and stopped afterwards."""
    server = Receiver()
    server.start()
    yield server
    server.release()
    server.stop()
