"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.api.principal import Principal
from parley.api.token_cache import TokenCache
from parley.config import Settings
from parley.realtime.node import RealtimeNode
from parley.services.storage import Storage

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
REALTIME = web.AppKey("realtime", RealtimeNode)
STORAGE = web.AppKey("storage", Storage)
TOKEN_CACHE = web.AppKey("token_cache", TokenCache)

PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)

__all__ = ["ENGINE", "PRINCIPAL", "REALTIME", "REQUEST_ID", "SESSIONS", "SETTINGS", "STORAGE", "TOKEN_CACHE", "Principal"]
