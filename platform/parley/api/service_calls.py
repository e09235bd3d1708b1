"""How a route calls a service: the one way in from HTTP to parley.services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session

from parley.api.keys import SESSIONS
from parley.db import run_service

P = ParamSpec("P")
T = TypeVar("T")


async def call(
    request: web.Request, service: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run `service(session, *args, **kwargs)` in a session of its own. A route that needs several
    operations in one transaction calls a service that composes them, not this several times."""
    return await run_service(request.app[SESSIONS], service, *args, **kwargs)
