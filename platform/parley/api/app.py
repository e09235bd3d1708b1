"""The aiohttp application factory. The app owns its database engine through cleanup_ctx; tests
build the app through this same factory."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from parley.api.auth import auth_middleware
from parley.api.bad_requests import install_json_bad_requests
from parley.api.endpoints import Endpoint
from parley.api.errors import error_middleware
from parley.api.keys import ENGINE, REALTIME, REQUEST_ID, SESSIONS, SETTINGS, STORAGE, TOKEN_CACHE
from parley.api.openapi import build_openapi
from parley.api.routes import attachments, conversations, email, meta, moderation, safety, users, webhooks
from parley.config import Settings
from parley.api.token_cache import CREDENTIALS_CHANGED, TokenCache
from parley.db import async_session_factory, create_async_db_engine, set_events_committed_hook
from parley.ids import new_id
from parley.logs import install_log_redaction
from parley.realtime import routes as realtime_routes
from parley.realtime.frames import CLOSE_GOING_AWAY
from parley.realtime.node import RealtimeNode
from integrations.storage.configured import storage_for
from workers.nudger import OutboxNudger

log = logging.getLogger("parley.api")

OUTBOX_NUDGER = web.AppKey("outbox_nudger", OutboxNudger)
# A caller's X-Request-ID is echoed in a response header and logged: only a plain token is taken.
CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

ROUTE_TABLES = (
    meta.endpoints,
    users.endpoints,
    conversations.endpoints,
    attachments.endpoints,
    webhooks.endpoints,
    safety.endpoints,
    moderation.endpoints,
    realtime_routes.endpoints,
    email.endpoints,
)


def all_endpoints() -> list[Endpoint]:
    return [e for table in ROUTE_TABLES for e in table.endpoints]


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-ID", "")
    request_id = given if CALLER_REQUEST_ID.fullmatch(given) else new_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    response = await handler(request)
    response.headers["X-Request-ID"] = request_id
    log.info(
        "request.finished",
        extra={
            "request_id": request_id,
            "method": request.method,
            "path": request.path,  # never the query string or headers: nothing secret is logged
            "status": response.status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return response


async def _outbox_nudger(app: web.Application) -> AsyncIterator[None]:
    nudger = OutboxNudger.for_settings(app[SETTINGS])
    app[OUTBOX_NUDGER] = nudger
    await nudger.start()
    yield
    await nudger.stop()


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_async_db_engine(app[SETTINGS])
    app[ENGINE] = engine
    app[SESSIONS] = async_session_factory(engine)
    yield
    await engine.dispose()


async def _realtime(app: web.Application) -> AsyncIterator[None]:
    node = RealtimeNode(app[SETTINGS], app[SESSIONS])
    app[REALTIME] = node
    cache = TokenCache(app[SETTINGS].token_cache_seconds)
    app[TOKEN_CACHE] = cache
    node.listen(CREDENTIALS_CHANGED, lambda message: cache.forget_user(str(message["user_id"])))
    await node.start()
    nudger = app[OUTBOX_NUDGER]

    def events_committed() -> None:
        # The one wake-up path: whatever committed events in this process (a request, anything
        # else on its loop) wakes the realtime tail here and elsewhere, and the dispatcher. Both
        # only raise a flag, so a commit is never delayed and an outage never fails a request.
        node.events_committed()
        nudger.nudge()

    set_events_committed_hook(app[SESSIONS], events_committed)
    yield
    await node.stop()


async def _close_websockets(app: web.Application) -> None:
    # on_shutdown runs before the server stops waiting for handlers: clients get a clean 1001.
    await app[REALTIME].close_all(CLOSE_GOING_AWAY, b"server shutting down")


async def _storage(app: web.Application) -> AsyncIterator[None]:
    app[STORAGE] = storage_for(app[SETTINGS])
    yield


def init_app(settings: Settings) -> web.Application:
    install_log_redaction()  # before the first request: aiohttp logs malformed ones itself
    install_json_bad_requests()  # and answers them itself, in plain text quoting the bad bytes
    app = web.Application(
        middlewares=[request_log_middleware, error_middleware, auth_middleware],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_outbox_nudger)
    app.cleanup_ctx.append(_realtime)
    app.on_shutdown.append(_close_websockets)
    app.cleanup_ctx.append(_storage)
    endpoints = all_endpoints()
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    app.router.add_static("/docs/static", meta.SWAGGER_STATIC)
    app[meta.OPENAPI_KEY] = build_openapi(
        endpoints, version=meta.parley_version(), max_message_chars=settings.max_message_chars
    )
    return app
