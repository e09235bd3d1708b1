"""Outbound webhook endpoints, their signing secrets and their delivery log. The admin token
manages the admin's endpoints (every conversation's events); a user's or bot's token manages its
own (the conversations it is in). Anyone else's endpoint is a 404."""

from __future__ import annotations

import asyncio

from aiohttp import web

from parley.api.auth import current_principal
from parley.api.endpoints import EndpointTable, parse_body, parse_query, respond
from parley.api.service_calls import call
from parley.api.keys import SETTINGS
from parley.api.webhook_schemas import (
    CreateWebhookBody,
    DeliveriesQuery,
    DeliveryListOut,
    DeliveryOut,
    QueuedOut,
    ReplayQuery,
    SecretRotatedOut,
    UpdateWebhookBody,
    WebhookCreatedOut,
    WebhookListOut,
    WebhookOut,
)
from parley.services import webhooks
from parley.services.webhooks import DeliveryRecord, EndpointChange, EndpointDraft
from webhooks.ssrf import UrlGuard

endpoints = EndpointTable(tag="webhooks")
WEBHOOK = "/api/v1/webhooks/{webhook_id}"


def _owner(request: web.Request) -> str | None:
    """None for the admin; the user's id otherwise."""
    principal = current_principal(request)
    return None if principal.is_admin else principal.user.id  # type: ignore[union-attr]


def _secret_response(model: WebhookCreatedOut | SecretRotatedOut, status: int) -> web.Response:
    response = respond(model, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@endpoints.route(
    "POST", "/api/v1/webhooks", summary="Register a webhook endpoint; its signing secret is shown once",
    auth="user_or_admin", body=CreateWebhookBody, responses={201: WebhookCreatedOut}, errors=(422,),
)
async def create_webhook(request: web.Request) -> web.Response:
    owner = _owner(request)
    body = await parse_body(request, CreateWebhookBody)
    settings = request.app[SETTINGS]
    draft = EndpointDraft(body.url, body.description, tuple(body.event_types), body.enabled)
    await asyncio.to_thread(UrlGuard(settings), draft.url)  # resolves the host: off the event loop
    created = await call(request, webhooks.create_endpoint, settings, owner, draft)
    shown = WebhookCreatedOut(**WebhookOut.of(created.endpoint).model_dump(), secret=created.secret)
    return _secret_response(shown, 201)


@endpoints.route(
    "GET", "/api/v1/webhooks", summary="The caller's webhook endpoints", auth="user_or_admin",
    responses={200: WebhookListOut},
)
async def list_webhooks(request: web.Request) -> web.Response:
    owner = _owner(request)
    found = await call(request, webhooks.list_endpoints, owner)
    return respond(WebhookListOut(items=[WebhookOut.of(e) for e in found]))


@endpoints.route(
    "GET", WEBHOOK, summary="One webhook endpoint", auth="user_or_admin", responses={200: WebhookOut}, errors=(404,),
)
async def get_webhook(request: web.Request) -> web.Response:
    owner = _owner(request)
    endpoint = await call(request, webhooks.get_endpoint, owner, request.match_info["webhook_id"])
    return respond(WebhookOut.of(endpoint))


@endpoints.route(
    "PATCH", WEBHOOK, summary="Change a webhook endpoint (only the fields given); enabling it again resumes delivery",
    auth="user_or_admin", body=UpdateWebhookBody, responses={200: WebhookOut}, errors=(404, 422),
)
async def update_webhook(request: web.Request) -> web.Response:
    owner = _owner(request)
    body = await parse_body(request, UpdateWebhookBody)
    settings = request.app[SETTINGS]
    change = EndpointChange(
        url=body.url,
        description=body.description,
        event_types=tuple(body.event_types) if body.event_types is not None else None,
        enabled=body.enabled,
    )
    if change.url is not None:
        await asyncio.to_thread(UrlGuard(settings), change.url)  # resolves the host: off the event loop
    endpoint = await call(request, webhooks.update_endpoint, owner, request.match_info["webhook_id"], change)
    return respond(WebhookOut.of(endpoint))


@endpoints.route(
    "DELETE", WEBHOOK, summary="Delete a webhook endpoint and its delivery log", auth="user_or_admin",
    responses={204: None}, errors=(404,),
)
async def delete_webhook(request: web.Request) -> web.Response:
    owner = _owner(request)
    await call(request, webhooks.delete_endpoint, owner, request.match_info["webhook_id"])
    return web.Response(status=204)


@endpoints.route(
    "POST", WEBHOOK + "/secret/rotate",
    summary="New signing secret (shown once); the previous one keeps signing beside it for 24 hours",
    auth="user_or_admin", responses={200: SecretRotatedOut}, errors=(404,),
)
async def rotate_webhook_secret(request: web.Request) -> web.Response:
    owner = _owner(request)
    webhook_id = request.match_info["webhook_id"]
    rotated = await call(request, webhooks.rotate_secret, request.app[SETTINGS], owner, webhook_id)
    expires = rotated.endpoint.previous_secret_expires_at
    assert expires is not None
    return _secret_response(SecretRotatedOut(id=rotated.endpoint.id, secret=rotated.secret, previous_secret_expires_at=expires), 200)


@endpoints.route(
    "POST", WEBHOOK + "/test", summary="Send a webhook.test event to this endpoint (409 webhook_disabled if it is off)",
    auth="user_or_admin", responses={202: QueuedOut}, errors=(404, 409),
)
async def test_webhook(request: web.Request) -> web.Response:
    owner = _owner(request)
    await call(request, webhooks.send_test, owner, request.match_info["webhook_id"])
    return respond(QueuedOut(queued=1), 202)


@endpoints.route(
    "GET", WEBHOOK + "/deliveries",
    summary="The delivery log, newest first: each delivery's status and attempts (time, duration, response)",
    auth="user_or_admin", query=DeliveriesQuery, responses={200: DeliveryListOut}, errors=(404, 422),
)
async def list_webhook_deliveries(request: web.Request) -> web.Response:
    owner = _owner(request)
    query = parse_query(request, DeliveriesQuery)
    records = await call(
        request, webhooks.list_deliveries, owner, request.match_info["webhook_id"], before=query.before, limit=query.limit
    )
    return respond(DeliveryListOut(items=[DeliveryOut.of(r) for r in records]))


@endpoints.route(
    "POST", WEBHOOK + "/deliveries/{delivery_id}/retry",
    summary="Deliver again now, with a fresh set of attempts and the same webhook-id (409 if the webhook is disabled)",
    auth="user_or_admin", responses={202: DeliveryOut}, errors=(404, 409),
)
async def retry_webhook_delivery(request: web.Request) -> web.Response:
    owner = _owner(request)
    delivery = await call(
        request, webhooks.retry_delivery, owner, request.match_info["webhook_id"], request.match_info["delivery_id"]
    )
    return respond(DeliveryOut.of(DeliveryRecord(delivery, [])), 202)


@endpoints.route(
    "POST", WEBHOOK + "/replay",
    summary="Re-send every event since a time that this endpoint takes (409 if the webhook is disabled)",
    auth="user_or_admin", query=ReplayQuery, responses={202: QueuedOut}, errors=(404, 409, 422),
)
async def replay_webhook(request: web.Request) -> web.Response:
    owner = _owner(request)
    query = parse_query(request, ReplayQuery)
    count = await call(request, webhooks.replay, owner, request.match_info["webhook_id"], query.since)
    return respond(QueuedOut(queued=count), 202)
