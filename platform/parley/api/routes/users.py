"""Users, the caller's own profile and settings, and API tokens."""

from __future__ import annotations

from aiohttp import web

from parley.api.auth import credentials_changed, current_principal, current_user, require_admin
from parley.api.endpoints import EndpointTable, parse_body, respond
from parley.api.service_calls import call
from parley.api.schemas import CreateTokenBody, CreateUserBody, SettingsPatchBody, TokenCreatedOut
from parley.schemas import NotificationSettingsOut, UserOut, UserPrivateOut
from parley.services import tokens, users

endpoints = EndpointTable(tag="users")


@endpoints.route(
    "POST", "/api/v1/users", summary="Provision a user (admin)", auth="admin",
    body=CreateUserBody, responses={201: UserPrivateOut}, errors=(409,),
)
async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    body = await parse_body(request, CreateUserBody)
    user = await call(request, users.create_user, users.NewUser(**body.model_dump()))
    return respond(UserPrivateOut.model_validate(user), 201)


@endpoints.route(
    "GET", "/api/v1/users/{user_id}", summary="A user's public profile", auth="user_or_admin",
    responses={200: UserOut}, errors=(404,),
)
async def get_user(request: web.Request) -> web.Response:
    current_principal(request)
    user = await call(request, users.get_user, request.match_info["user_id"])
    return respond(UserOut.model_validate(user))


@endpoints.route(
    "GET", "/api/v1/users/by-username/{username}", summary="Find a user by username (any case)",
    auth="user_or_admin", responses={200: UserOut}, errors=(404,),
)
async def get_user_by_username(request: web.Request) -> web.Response:
    current_principal(request)
    user = await call(request, users.get_user_by_username, request.match_info["username"])
    return respond(UserOut.model_validate(user))


@endpoints.route("GET", "/api/v1/me", summary="The caller, contact details included", responses={200: UserPrivateOut})
async def get_me(request: web.Request) -> web.Response:
    return respond(UserPrivateOut.model_validate(current_user(request)))


@endpoints.route(
    "GET", "/api/v1/me/settings", summary="The caller's notification settings", responses={200: NotificationSettingsOut}
)
async def get_my_settings(request: web.Request) -> web.Response:
    user = current_user(request)
    fresh = await call(request, users.get_user, user.id)
    return respond(NotificationSettingsOut.model_validate(fresh))


@endpoints.route(
    "PATCH", "/api/v1/me/settings", summary="Change notification settings (only the fields given)",
    body=SettingsPatchBody, responses={200: NotificationSettingsOut},
)
async def update_my_settings(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await parse_body(request, SettingsPatchBody)
    change = users.NotificationSettingsChange(**body.model_dump(exclude_unset=True, exclude_none=True))
    updated = await call(request, users.update_notification_settings, user.id, change)
    return respond(NotificationSettingsOut.model_validate(updated))


@endpoints.route(
    "POST", "/api/v1/users/{user_id}/tokens", summary="Mint an API token for a user (admin); shown once",
    auth="admin", body=CreateTokenBody, body_optional=True, responses={201: TokenCreatedOut}, errors=(404,),
)
async def create_token(request: web.Request) -> web.Response:
    require_admin(request)
    body = await parse_body(request, CreateTokenBody, optional=True)
    minted = await call(request, tokens.create_token, request.match_info["user_id"], body.name)
    created = TokenCreatedOut(
        id=minted.token.id,
        token=minted.secret,
        user_id=minted.token.user_id,
        name=minted.token.name,
        created_at=minted.token.created_at,
    )
    response = respond(created, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


@endpoints.route(
    "DELETE", "/api/v1/tokens/{token_id}", summary="Revoke a token (your own, or any as admin)",
    auth="user_or_admin", responses={204: None}, errors=(404,),
)
async def revoke_token(request: web.Request) -> web.Response:
    principal = current_principal(request)
    actor_id = None if principal.is_admin else principal.user.id  # type: ignore[union-attr]
    holder_id = await call(request, tokens.revoke_token, request.match_info["token_id"], actor_id=actor_id)
    await credentials_changed(request, holder_id)
    return web.Response(status=204)
