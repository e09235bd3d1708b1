"""GET /api/v1/ws (the WebSocket), its one-time tickets, and presence over REST."""

from __future__ import annotations

import logging
from datetime import timedelta

from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from parley.api.auth import current_user
from parley.api.endpoints import EndpointTable, parse_query, respond
from parley.db import run_service
from parley.api.errors import ApiError
from parley.api.service_calls import call
from parley.api.keys import PRINCIPAL, REALTIME, SETTINGS
from parley.realtime.connection import Connection
from parley.realtime.frames import FrameError, PingFrame, ServerFrame, encode_frame, error_frame, parse_client_frame
from parley.realtime.node import RealtimeNode
from parley.realtime.schemas import PresenceOut, WsQuery, WsTicketOut
from parley.services.event_feed import can_replay_since, member_events_after, require_shared_conversation
from parley.services.users import get_user
from parley.services.ws_tickets import issue_ticket, redeem_ticket

log = logging.getLogger("parley.realtime")

endpoints = EndpointTable(tag="realtime")

REPLAY_PAGE = 500
PRESENCE_RETRY_AFTER_SECONDS = 5


@endpoints.route(
    "POST", "/api/v1/ws/tickets", summary="A one-time WebSocket ticket (60 s), for browsers",
    responses={201: WsTicketOut},
)
async def create_ticket(request: web.Request) -> web.Response:
    user = current_user(request)
    issued = await call(request, issue_ticket, user.id, request.app[SETTINGS].ws_ticket_seconds)
    return respond(WsTicketOut(ticket=issued.ticket, expires_at=issued.expires_at), 201)


@endpoints.route(
    "GET", "/api/v1/users/{user_id}/presence", summary="Whether a user you share a conversation with is online",
    responses={200: PresenceOut}, errors=(404, 503),
)
async def get_presence(request: web.Request) -> web.Response:
    viewer = current_user(request)
    user_id = request.match_info["user_id"]
    await call(request, require_shared_conversation, viewer.id, user_id)
    try:
        presence = await request.app[REALTIME].presence_of(user_id)
    except (RedisError, OSError) as exc:
        # Presence lives in Redis; while it is away say so plainly (the WebSocket side degrades too).
        log.warning("realtime.presence_unavailable", extra={"error": repr(exc)})
        raise ApiError(
            503, "presence_unavailable", "presence is unavailable right now; try again shortly",
            {"retry_after_seconds": PRESENCE_RETRY_AFTER_SECONDS},
        ) from None
    return respond(presence)


async def _connecting_user_id(request: web.Request, query: WsQuery) -> str:
    """Who is connecting, decided before the upgrade: a bearer token (checked by the auth
    middleware) or a one-time ticket."""
    principal = request[PRINCIPAL]
    if principal.user is not None:
        return principal.user.id
    if principal.is_admin:
        raise ApiError(403, "user_token_required", "a WebSocket belongs to a user: use that user's token")
    if query.ticket is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>' or ?ticket=")
    user_id = await call(request, redeem_ticket, query.ticket)
    if user_id is None:
        raise ApiError(401, "invalid_ticket", "the ticket is unknown, expired or already used")
    holder = await call(request, get_user, user_id)
    if holder.suspended_at is not None:
        raise ApiError(401, "suspended", "this account is suspended")
    return user_id


@endpoints.route(
    "GET", "/api/v1/ws", summary="Live events over WebSocket (upgrade; ?since= replays what was missed)",
    auth="none", query=WsQuery, responses={101: None}, errors=(401, 403, 426),
)
async def websocket(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, WsQuery)
    user_id = await _connecting_user_id(request, query)
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_seconds, max_msg_size=settings.ws_max_frame_bytes)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "upgrade_required", "this route speaks WebSocket only")
    await ws.prepare(request)
    node = request.app[REALTIME]
    connection = Connection(
        user_id=user_id,
        ws=ws,
        transport=request.transport,
        queue_size=settings.ws_send_queue_frames,
        send_timeout=settings.ws_send_timeout_seconds,
    )
    await node.attach(connection)
    log.info("realtime.connected", extra={"user_id": user_id, "connection_id": connection.id})
    try:
        await _open(node, connection, query.since)
        await _receive(node, connection)
    except (TimeoutError, ConnectionError, RuntimeError):
        pass  # the client left or stalled during the replay
    finally:
        await connection.finish()
        await node.detach(connection)
        log.info("realtime.disconnected", extra={"user_id": user_id, "connection_id": connection.id})
    return ws


async def _open(node: RealtimeNode, connection: Connection, since: int | None) -> None:
    """hello, then the replay (or resync_required), then live events."""
    settings = node.settings
    hello = {
        "user_id": connection.user_id,
        "connection_id": connection.id,
        "node_id": node.node_id,
        "last_event_id": node.position,
        "heartbeat_seconds": settings.ws_heartbeat_seconds,
        "max_frame_bytes": settings.ws_max_frame_bytes,
    }
    await connection.send_replayed(encode_frame(ServerFrame.HELLO, hello))
    if since is not None:
        replayable = await run_service(
            node.sessions,
            can_replay_since,
            connection.user_id,
            since,
            window=timedelta(hours=settings.realtime_replay_hours),
            max_events=settings.realtime_replay_max_events,
        )
        if not replayable:
            await connection.send_replayed(
                encode_frame(ServerFrame.RESYNC_REQUIRED, {"since": since, "reason": "events after 'since' are no longer kept"})
            )
        else:
            after = since
            while True:
                page = await run_service(node.sessions, member_events_after, connection.user_id, after, REPLAY_PAGE)
                for event in page:
                    frame = encode_frame(event.type, event.payload, event_id=event.id, conversation_id=event.conversation_id)
                    await connection.send_replayed(frame, event.id)
                    after = event.id
                if len(page) < REPLAY_PAGE:
                    break
    await connection.go_live()


async def _receive(node: RealtimeNode, connection: Connection) -> None:
    ws = connection.ws
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            try:
                await _handle_frame(node, connection, message.data)
            except (ConnectionError, RuntimeError):
                raise
            except Exception:
                # Past the upgrade an escaping exception would become an HTTP 500 written onto the
                # socket (a protocol error for the client): answer this frame and keep the connection.
                log.exception("realtime.frame_failed", extra={"user_id": connection.user_id, "connection_id": connection.id})
                connection.offer(error_frame("internal_error", "this frame could not be handled; try again"))
        elif message.type == WSMsgType.BINARY:
            connection.offer(error_frame("binary_not_supported", "frames are JSON text"))
        elif message.type == WSMsgType.ERROR:
            break


async def _handle_frame(node: RealtimeNode, connection: Connection, text: str) -> None:
    try:
        frame = parse_client_frame(text)
    except FrameError as exc:
        connection.offer(error_frame(exc.code, exc.message))
        return
    if isinstance(frame, PingFrame):
        connection.offer(encode_frame(ServerFrame.PONG, {}))
        return
    partner_id = node.hub.partner_in(connection.user_id, frame.conversation_id)
    if partner_id is None:
        partner_id = await node.learn_conversation(connection.user_id, frame.conversation_id)
    if partner_id is None:
        connection.offer(error_frame("not_participant", "you are not a member of this conversation"))
        return
    if connection.allow_typing(frame.conversation_id, node.settings.typing_min_interval_seconds):
        await node.relay_typing(connection, frame.conversation_id, partner_id)
