"""Conversations, their messages and read receipts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from parley.api.auth import current_user
from parley.api.endpoints import EndpointTable, parse_body, parse_query, respond
from parley.api.service_calls import call
from parley.api.keys import SETTINGS
from parley.api.schemas import (
    CreateConversationBody,
    HistoryOut,
    HistoryQuery,
    InboxOut,
    InboxQuery,
    MarkReadBody,
    ReadReceiptOut,
    SendMessageBody,
)
from parley.schemas import ConversationOut, MessageOut
from parley.services import contact, conversations, messages, read_receipts
from parley.services.conversations import OtherUser
from parley.services.messages import AttachmentDraft, MessageDraft
from parley.services.policy import Action
from webhooks.policy import consult as consult_policy

endpoints = EndpointTable(tag="conversations")


def _runner(request: web.Request) -> Callable[..., Awaitable[Any]]:
    async def run(service: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await call(request, service, *args, **kwargs)

    return run


def _draft(body: SendMessageBody) -> MessageDraft:
    return MessageDraft(
        content=body.content,
        attachments=tuple(AttachmentDraft(**a.model_dump()) for a in body.attachments),
        client_id=body.client_id,
        attachment_ids=tuple(body.attachment_ids),
    )


@endpoints.route(
    "POST", "/api/v1/conversations",
    summary="Find or start the conversation with a user (201 created, 200 existing), optionally sending a first message",
    body=CreateConversationBody, responses={201: ConversationOut, 200: ConversationOut}, errors=(403, 404, 409),
)
async def create_conversation(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await parse_body(request, CreateConversationBody)
    first = _draft(body.message) if body.message is not None else None
    other = OtherUser(user_id=body.user_id, username=body.username)
    settings = request.app[SETTINGS]
    actions = [Action.START, Action.SEND] if first is not None else [Action.START]
    await consult_policy(_runner(request), settings, user, actions, other_user_id=body.user_id, other_username=body.username)
    shown, created = await call(request, contact.start_conversation, settings, user, other, first)
    return respond(shown, 201 if created else 200)


@endpoints.route(
    "GET", "/api/v1/conversations", summary="The caller's inbox, most recent activity first",
    query=InboxQuery, responses={200: InboxOut},
)
async def list_inbox(request: web.Request) -> web.Response:
    user = current_user(request)
    query = parse_query(request, InboxQuery)
    page = await call(
        request, conversations.list_inbox, user, cursor=query.cursor, limit=query.limit, settings=request.app[SETTINGS]
    )
    return respond(InboxOut(items=page.items, next_cursor=page.next_cursor))


@endpoints.route(
    "GET", "/api/v1/conversations/with/{user_id}", summary="The conversation with a user, if one exists",
    responses={200: ConversationOut}, errors=(404,),
)
async def get_conversation_with(request: web.Request) -> web.Response:
    user = current_user(request)
    shown = await call(
        request, conversations.find_conversation_with, user, request.match_info["user_id"], settings=request.app[SETTINGS]
    )
    return respond(shown)


@endpoints.route(
    "GET", "/api/v1/conversations/{conversation_id}", summary="One conversation of the caller's",
    responses={200: ConversationOut}, errors=(404,),
)
async def get_conversation(request: web.Request) -> web.Response:
    user = current_user(request)
    shown = await call(
        request, conversations.show_conversation, user, request.match_info["conversation_id"],
        settings=request.app[SETTINGS],
    )
    return respond(shown)


@endpoints.route(
    "GET", "/api/v1/conversations/{conversation_id}/messages",
    summary="History, oldest to newest: the last 50 by default; `before` pages back, `after` forward, both: "
    "the messages between them",
    query=HistoryQuery, responses={200: HistoryOut}, errors=(403, 404),
)
async def list_messages(request: web.Request) -> web.Response:
    user = current_user(request)
    query = parse_query(request, HistoryQuery)
    page = await call(
        request, messages.list_history, user, request.match_info["conversation_id"],
        before=query.before, after=query.after, limit=query.limit, settings=request.app[SETTINGS],
    )
    return respond(HistoryOut(items=page.items, has_more=page.has_more))


@endpoints.route(
    "POST", "/api/v1/conversations/{conversation_id}/messages",
    summary="Send a message (201); repeating a client_id returns the original (200)",
    body=SendMessageBody, responses={201: MessageOut, 200: MessageOut}, errors=(403, 404, 409),
)
async def send_message(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await parse_body(request, SendMessageBody)
    conversation_id = request.match_info["conversation_id"]
    settings = request.app[SETTINGS]
    await consult_policy(_runner(request), settings, user, [Action.SEND], conversation_id=conversation_id)
    message, created = await call(request, messages.send_message, settings, user, conversation_id, _draft(body))
    return respond(message, 201 if created else 200)


@endpoints.route(
    "POST", "/api/v1/conversations/{conversation_id}/read",
    summary="Mark the other member's messages read, up to `message_id` or all",
    body=MarkReadBody, body_optional=True, responses={200: ReadReceiptOut}, errors=(404,),
)
async def mark_read(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await parse_body(request, MarkReadBody, optional=True)
    state = await call(request, read_receipts.mark_read, user, request.match_info["conversation_id"], body.message_id)
    receipt = state.receipt
    return respond(
        ReadReceiptOut(
            conversation_id=receipt.conversation_id,
            up_to_message_id=receipt.up_to_message_id,
            read_at=receipt.read_at,
            count=receipt.count,
            unread_count=state.unread_count,
        )
    )


@endpoints.route(
    "DELETE", "/api/v1/messages/{message_id}",
    summary="Delete your message for both members, for good (again: no change)",
    responses={200: MessageOut}, errors=(403, 404),
)
async def delete_message(request: web.Request) -> web.Response:
    user = current_user(request)
    message = await call(request, messages.delete_message, user, request.match_info["message_id"], request.app[SETTINGS])
    return respond(message)
