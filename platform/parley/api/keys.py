"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from aiohttp import web

from parley.api.principal import Principal
from parley.config import Settings

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])

# Request-scoped values live in the request mapping under plain string keys (aiohttp's RequestKey
# is not in every supported version); these names are the only ones used.
PRINCIPAL = "parley.principal"
REQUEST_ID = "parley.request_id"

__all__ = ["ENGINE", "PRINCIPAL", "REQUEST_ID", "SESSIONS", "SETTINGS", "Principal"]
