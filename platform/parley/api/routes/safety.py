"""Who may talk to whom: relationships (the host product, admin token) and blocks (users)."""

from __future__ import annotations

import re

from aiohttp import web

from parley.api.auth import current_user, require_admin
from parley.api.endpoints import EndpointTable, parse_body, parse_query, respond
from parley.api.errors import ApiError
from parley.api.keys import REALTIME, SETTINGS
from parley.api.safety_schemas import (
    REFERENCE_PATTERN,
    REFERENCE_SCHEMA,
    BlockListOut,
    RelationshipBody,
    RelationshipListOut,
    RelationshipOut,
    RelationshipQuery,
)
from parley.api.service_calls import call
from parley.services import blocks, policy
from parley.realtime.node import BLOCKS_CHANGED
from parley.services.policy import RelationshipDraft

endpoints = EndpointTable(tag="safety")
RELATIONSHIP = "/api/v1/relationships/{reference}"
_REFERENCE = re.compile(REFERENCE_PATTERN)


def _reference(request: web.Request) -> str:
    reference = request.match_info["reference"]
    if not _REFERENCE.fullmatch(reference):
        raise ApiError(404, "relationship_not_found", "no such relationship", {"reference": reference[:200]})
    return reference


@endpoints.route(
    "PUT", RELATIONSHIP,
    summary="Create (201) or update (200) the relationship that lets two users talk under "
    "PARLEY_CONVERSATION_POLICY=relationships (admin); the reference is the host product's own id",
    auth="admin", body=RelationshipBody, responses={201: RelationshipOut, 200: RelationshipOut}, errors=(404,),
    path_schemas={"reference": REFERENCE_SCHEMA},
)
async def put_relationship(request: web.Request) -> web.Response:
    require_admin(request)
    reference = _reference(request)
    body = await parse_body(request, RelationshipBody)
    draft = RelationshipDraft(user_ids=(body.user_ids[0], body.user_ids[1]), active=body.active, expires_at=body.expires_at)
    relationship, created = await call(request, policy.put_relationship, request.app[SETTINGS], reference, draft)
    return respond(RelationshipOut.of(relationship), 201 if created else 200)


@endpoints.route(
    "GET", "/api/v1/relationships", summary="Relationships, oldest first, optionally of one user (admin)",
    auth="admin", query=RelationshipQuery, responses={200: RelationshipListOut},
)
async def list_relationships(request: web.Request) -> web.Response:
    require_admin(request)
    query = parse_query(request, RelationshipQuery)
    found = await call(request, policy.list_relationships, query.user_id)
    return respond(RelationshipListOut(items=[RelationshipOut.of(r) for r in found]))


@endpoints.route(
    "DELETE", RELATIONSHIP, summary="Delete a relationship (admin)", auth="admin", responses={204: None},
    errors=(404,), path_schemas={"reference": REFERENCE_SCHEMA},
)
async def delete_relationship(request: web.Request) -> web.Response:
    require_admin(request)
    await call(request, policy.delete_relationship, request.app[SETTINGS], _reference(request))
    return web.Response(status=204)


@endpoints.route(
    "POST", "/api/v1/users/{user_id}/block",
    summary="Block a user: they can no longer start a conversation with you or send to you, and their "
    "typing and presence no longer reach you (again: no change)",
    responses={204: None}, errors=(404, 422),
)
async def block_user(request: web.Request) -> web.Response:
    user = current_user(request)
    await call(request, blocks.block_user, user, request.match_info["user_id"])
    await request.app[REALTIME].reload_blocks(user.id)
    await request.app[REALTIME].publish({"kind": BLOCKS_CHANGED, "user_id": user.id})
    return web.Response(status=204)


@endpoints.route(
    "DELETE", "/api/v1/users/{user_id}/block", summary="Lift a block (none: no change)",
    responses={204: None}, errors=(404,),
)
async def unblock_user(request: web.Request) -> web.Response:
    user = current_user(request)
    await call(request, blocks.unblock_user, user, request.match_info["user_id"])
    await request.app[REALTIME].reload_blocks(user.id)
    await request.app[REALTIME].publish({"kind": BLOCKS_CHANGED, "user_id": user.id})
    return web.Response(status=204)


@endpoints.route("GET", "/api/v1/me/blocks", summary="The users you blocked", responses={200: BlockListOut})
async def list_my_blocks(request: web.Request) -> web.Response:
    user = current_user(request)
    found = await call(request, blocks.list_blocks, user)
    return respond(BlockListOut(items=found))
