"""Bearer-token authentication. Tokens travel only in the Authorization header, never in URLs,
and are compared by hash (users) or in constant time (the admin token). Whom a token belongs to
is cached briefly per process (parley.api.token_cache)."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from parley.api.errors import ApiError
from parley.api.keys import PRINCIPAL, REALTIME, SETTINGS, TOKEN_CACHE
from parley.api.token_cache import CREDENTIALS_CHANGED
from parley.api.service_calls import call
from parley.api.principal import Principal
from parley.models import User
from parley.services.tokens import authenticate, hash_token

_ANONYMOUS = Principal()


def _bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


INBOUND_EMAIL_PATH = "/api/v1/inbound/email"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The inbound email route's bearer is PARLEY_INBOUND_EMAIL_SECRET, which that route checks itself.
    token = None if request.path == INBOUND_EMAIL_PATH else _bearer_token(request)
    principal = _ANONYMOUS
    if token is not None:
        admin_token = request.app[SETTINGS].admin_token
        if admin_token is not None and hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), admin_token.get_secret_value().encode()
        ):
            principal = Principal(is_admin=True)
        else:
            principal = Principal(user=await _token_holder(request, token))
    request[PRINCIPAL] = principal
    return await handler(request)


async def _token_holder(request: web.Request, token: str) -> User:
    cache = request.app[TOKEN_CACHE]
    token_hash = hash_token(token)
    user = cache.get(token_hash)
    if user is None:
        generation = cache.generation
        user = await call(request, authenticate, token)
        if user is None:
            raise ApiError(401, "unauthorized", "the bearer token is unknown or revoked")
        cache.put(token_hash, user, generation)
    if user.suspended_at is not None:
        raise ApiError(401, "suspended", "this account is suspended")
    return user


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


async def credentials_changed(request: web.Request, user_id: str) -> None:
    """A user's tokens or standing changed: no API process may answer from its cache for them."""
    await request.app[REALTIME].publish({"kind": CREDENTIALS_CHANGED, "user_id": user_id})
