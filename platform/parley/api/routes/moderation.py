"""Reports (members) and moderator tools (the admin token): reports, removal, suspension, export."""

from __future__ import annotations

from aiohttp import web

from parley.api.auth import credentials_changed, current_user, require_admin
from parley.api.endpoints import EndpointTable, parse_body, parse_query, respond
from parley.api.keys import REALTIME, SETTINGS
from parley.api.safety_schemas import (
    ExportedMessageOut,
    ExportOut,
    ReportBody,
    ReportListOut,
    ReportsQuery,
    ResolveReportBody,
    SuspensionOut,
)
from parley.api.service_calls import call
from parley.realtime.node import USER_SUSPENDED
from parley.schemas import MessageOut, ReportOut
from parley.services import moderation

endpoints = EndpointTable(tag="moderation")


@endpoints.route(
    "POST", "/api/v1/messages/{message_id}/report",
    summary="Report a message of one of your conversations to the moderators (message.reported goes to the "
    "admin's webhooks)",
    body=ReportBody, responses={201: ReportOut}, errors=(404,),
)
async def report_message(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await parse_body(request, ReportBody)
    report = await call(request, moderation.report_message, user, request.match_info["message_id"], body.reason)
    return respond(report, 201)


@endpoints.route(
    "GET", "/api/v1/admin/reports", summary="Reports, newest first, optionally by status (admin)",
    auth="admin", query=ReportsQuery, responses={200: ReportListOut},
)
async def list_reports(request: web.Request) -> web.Response:
    require_admin(request)
    query = parse_query(request, ReportsQuery)
    found = await call(request, moderation.list_reports, query.status, before=query.before, limit=query.limit)
    return respond(ReportListOut(items=found))


@endpoints.route(
    "POST", "/api/v1/admin/reports/{report_id}/resolve", summary="Resolve a report (again: no change) (admin)",
    auth="admin", body=ResolveReportBody, body_optional=True, responses={200: ReportOut}, errors=(404,),
)
async def resolve_report(request: web.Request) -> web.Response:
    require_admin(request)
    body = await parse_body(request, ResolveReportBody, optional=True)
    report = await call(request, moderation.resolve_report, request.match_info["report_id"], body.resolution)
    return respond(report)


@endpoints.route(
    "POST", "/api/v1/admin/messages/{message_id}/remove",
    summary="Remove a message: both members see \"This message was removed by a moderator\", its attachments "
    "are removed (admin)",
    auth="admin", responses={200: MessageOut}, errors=(404,),
)
async def remove_message(request: web.Request) -> web.Response:
    require_admin(request)
    message = await call(request, moderation.remove_message, request.app[SETTINGS], request.match_info["message_id"])
    return respond(message)


async def _set_suspended(request: web.Request, suspended: bool) -> web.Response:
    require_admin(request)
    user = await call(request, moderation.set_suspended, request.match_info["user_id"], suspended)
    # Every node drops the user's cached credentials, and (a suspension) closes their WebSockets.
    await credentials_changed(request, user.id)
    if suspended:
        await request.app[REALTIME].close_user(user.id)
        await request.app[REALTIME].publish({"kind": USER_SUSPENDED, "user_id": user.id})
    return respond(SuspensionOut(user_id=user.id, suspended=user.suspended_at is not None, suspended_at=user.suspended_at))


@endpoints.route(
    "POST", "/api/v1/admin/users/{user_id}/suspend",
    summary="Suspend a user: their tokens answer 401 suspended and their WebSockets close, on every node (admin)",
    auth="admin", responses={200: SuspensionOut}, errors=(404,),
)
async def suspend_user(request: web.Request) -> web.Response:
    return await _set_suspended(request, True)


@endpoints.route(
    "POST", "/api/v1/admin/users/{user_id}/unsuspend", summary="Lift a suspension (admin)",
    auth="admin", responses={200: SuspensionOut}, errors=(404,),
)
async def unsuspend_user(request: web.Request) -> web.Response:
    return await _set_suspended(request, False)


@endpoints.route(
    "GET", "/api/v1/admin/conversations/{conversation_id}/export",
    summary="A conversation's whole history as JSON for a dispute, with masked originals and retained "
    "deleted text (admin)",
    auth="admin", responses={200: ExportOut}, errors=(404,),
)
async def export_conversation(request: web.Request) -> web.Response:
    require_admin(request)
    export = await call(request, moderation.export_conversation, request.match_info["conversation_id"])
    shown = ExportOut(
        conversation=export.conversation,
        messages=[ExportedMessageOut(**m.message.model_dump(), original_content=m.original_content) for m in export.messages],
        reports=export.reports,
        exported_at=export.exported_at,
    )
    return respond(shown)
