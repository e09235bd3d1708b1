"""Bearer-token authentication. Tokens travel only in the Authorization header, never in URLs,
and are compared by hash (users) or in constant time (the admin token)."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from parley.api.errors import ApiError
from parley.api.keys import PRINCIPAL, SESSIONS, SETTINGS
from parley.api.principal import Principal
from parley.models import User
from parley.services.tokens import authenticate

_ANONYMOUS = Principal()


def _bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = _bearer_token(request)
    principal = _ANONYMOUS
    if token is not None:
        admin_token = request.app[SETTINGS].admin_token
        if admin_token is not None and hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), admin_token.get_secret_value().encode()
        ):
            principal = Principal(is_admin=True)
        else:
            async with request.app[SESSIONS]() as session:
                user = await authenticate(session, token)
            if user is None:
                raise ApiError(401, "unauthorized", "the bearer token is unknown or revoked")
            principal = Principal(user=user)
    request[PRINCIPAL] = principal
    return await handler(request)


def current_user(request: web.Request) -> User:
    principal = request[PRINCIPAL]
    if principal.user is None:
        if principal.is_admin:
            raise ApiError(403, "user_token_required", "this route acts as a user: use that user's token")
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
    return principal.user


def require_admin(request: web.Request) -> None:
    principal = request[PRINCIPAL]
    if principal.is_admin:
        return
    if principal.user is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <admin token>'")
    raise ApiError(403, "admin_required", "this route needs the admin token")


def current_principal(request: web.Request) -> Principal:
    principal = request[PRINCIPAL]
    if principal.user is None and not principal.is_admin:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
    return principal
