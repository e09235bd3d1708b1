"""Email's HTTP side: replies forwarded as raw MIME by a provider (SES, Mailgun, Postmark), and the
one-click unsubscribe link of every notification and digest (RFC 8058)."""

from __future__ import annotations

import asyncio
import hmac
from html import escape
from typing import Any

from aiohttp import web

from integrations.email.inbound import receive
from parley.api.endpoints import EndpointTable
from parley.api.errors import ApiError
from parley.api.keys import SESSIONS, SETTINGS, STORAGE
from parley.api.service_calls import call
from parley.db import run_service
from parley.services.email_notifications import DIGEST_LIST, read_unsubscribe_token, unsubscribe

endpoints = EndpointTable(tag="email")

CHUNK_BYTES = 256 * 1024


def _check_secret(request: web.Request) -> None:
    secret = request.app[SETTINGS].inbound_email_secret
    if secret is None:
        raise ApiError(404, "not_found", "inbound email is not enabled (PARLEY_INBOUND_EMAIL_SECRET)")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode("utf-8", "surrogatepass"), secret.get_secret_value().encode("utf-8")
    ):
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <PARLEY_INBOUND_EMAIL_SECRET>'")


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"the email is larger than {limit} bytes", {"max_bytes": limit})
    body = bytearray()
    while chunk := await request.content.read(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"the email is larger than {limit} bytes", {"max_bytes": limit})
    return bytes(body)


@endpoints.route(
    "POST",
    "/api/v1/inbound/email",
    summary="A reply by email as raw MIME (Content-Type: message/rfc822), with Authorization: Bearer "
    "<PARLEY_INBOUND_EMAIL_SECRET>: 202 posted, 200 {\"ignored\": reason} when dropped on purpose",
    auth="none",
    responses={202: None, 200: None},
    errors=(401, 404, 413, 415),
    include_in_schema=False,
)
async def inbound_email(request: web.Request) -> web.Response:
    _check_secret(request)
    settings = request.app[SETTINGS]
    if request.content_type != "message/rfc822":
        raise ApiError(415, "unsupported_media_type", "send the raw email as Content-Type: message/rfc822")
    raw = await _read_limited(request, settings.email_max_inbound_bytes)
    loop = asyncio.get_running_loop()
    sessions = request.app[SESSIONS]

    def run(service: Any, *args: Any) -> Any:
        # From the pipeline's thread back onto the API's event loop and async engine.
        return asyncio.run_coroutine_threadsafe(run_service(sessions, service, *args), loop).result()

    outcome = await asyncio.to_thread(
        receive, raw, settings=settings, storage=request.app[STORAGE], run=run
    )
    if outcome.posted_message_id is not None:
        return web.json_response({"message_id": outcome.posted_message_id}, status=202)
    return web.json_response({"ignored": outcome.ignored}, status=200)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto;">
<h1>{title}</h1>{body}</body></html>
"""


@endpoints.route(
    "GET",
    "/api/v1/email/unsubscribe/{token}",
    summary="The unsubscribe link's page: asks to confirm, changes nothing",
    auth="none",
    responses={200: None},
    errors=(404,),
    include_in_schema=False,
)
async def unsubscribe_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    found = read_unsubscribe_token(request.app[SETTINGS], token)
    if found is None:
        raise ApiError(404, "not_found", "this unsubscribe link is not valid")
    question = "Stop receiving digests of unread messages?" if found[1] == DIGEST_LIST else (
        "Stop receiving emails about unread messages?"
    )
    body = (
        f"<p>{question}</p>"
        f'<form method="post" action="{escape(request.path)}"><button type="submit">Unsubscribe</button></form>'
    )
    return web.Response(text=_PAGE.format(title="Unsubscribe", body=body), content_type="text/html")


@endpoints.route(
    "POST",
    "/api/v1/email/unsubscribe/{token}",
    summary="One-click unsubscribe (RFC 8058): turns off the emails the link came in (notifications or digests)",
    auth="none",
    responses={200: None},
    errors=(404,),
    include_in_schema=False,
)
async def unsubscribe_now(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    found = read_unsubscribe_token(request.app[SETTINGS], token)
    done = found is not None and await call(request, unsubscribe, request.app[SETTINGS], token)
    if not done:
        raise ApiError(404, "not_found", "this unsubscribe link is not valid")
    assert found is not None
    body = "<p>You will no longer receive digests of unread messages.</p>" if found[1] == DIGEST_LIST else (
        "<p>You will no longer receive emails about unread messages.</p>"
    )
    return web.Response(text=_PAGE.format(title="Unsubscribed", body=body), content_type="text/html")
