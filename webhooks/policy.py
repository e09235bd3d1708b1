"""Asking the host product whether a conversation may start or a message be sent
(PARLEY_CONVERSATION_POLICY=webhook): a signed POST (Standard Webhooks) of
`{"action", "from", "to", "conversation_id"}` to PARLEY_POLICY_URL, through the same SSRF guard and
guarded transport as webhook deliveries, expecting `{"allow": true}` or `{"allow": false, "reason"}`.

The services decide with the answers kept in the database (parley.services.policy); this module is
the adapters' half: `consult` (async, the API) and `consult_sync` (a worker, before it calls
`send_message`) ask what `open_questions` lists and keep the answers with `record_answers`. A
timeout or an error keeps nothing, so the service fails closed (or open, PARLEY_POLICY_FAIL_OPEN).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.ids import new_id
from parley.models import User
from parley.services import policy
from parley.services.policy import Action, Answer, Question
from webhooks.signing import webhook_headers
from webhooks.ssrf import UrlGuard, UrlNotAllowed
from webhooks.transport import client_session

log = logging.getLogger("parley.policy")
USER_AGENT = "Parley-Policy/1"
MAX_REASON_CHARS = 500
T = TypeVar("T")


async def ask(settings: Settings, question: Question, http: aiohttp.ClientSession | None = None) -> Answer | None:
    """The host product's answer, or None if it gave none in time (or an unusable one)."""
    assert settings.policy_url is not None and settings.policy_secret is not None
    guard = UrlGuard(settings)
    own = http is None
    session = http or client_session(guard, max_connections=4)
    body = json.dumps(question.body()).encode()
    headers = webhook_headers([settings.policy_secret.get_secret_value()], "pol_" + new_id(), int(time.time()), body)
    headers["user-agent"] = USER_AGENT
    try:
        target = guard.target(settings.policy_url)
        try:
            guard.check_address(ipaddress.ip_address(target.host), target.host)  # literal IPs skip the resolver
        except ValueError:
            pass
        async with asyncio.timeout(settings.policy_timeout_seconds):
            async with session.post(settings.policy_url, data=body, headers=headers, allow_redirects=False) as response:
                if response.status != 200:
                    log.warning("policy.bad_status", extra={"status": response.status})
                    return None
                answer = await response.json(content_type=None)
    except TimeoutError:
        log.warning("policy.timeout", extra={"seconds": settings.policy_timeout_seconds})
        return None
    except UrlNotAllowed as exc:
        log.warning("policy.url_not_allowed", extra={"error": exc.message})
        return None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        log.warning("policy.failed", extra={"error": repr(exc)[:300]})
        return None
    finally:
        if own:
            await session.close()
    return _parse(answer)


def _parse(answer: Any) -> Answer | None:
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        log.warning("policy.bad_answer")
        return None
    reason = answer.get("reason")
    return Answer(answer["allow"], str(reason)[:MAX_REASON_CHARS] if reason is not None else None)


async def ask_all(settings: Settings, questions: Sequence[Question]) -> list[tuple[Question, Answer]]:
    answers = await asyncio.gather(*(ask(settings, q) for q in questions))
    return [(q, a) for q, a in zip(questions, answers, strict=True) if a is not None]


ServiceCall = Callable[..., Awaitable[Any]]


async def consult(
    run: ServiceCall, settings: Settings, actor: User, actions: Sequence[Action], **where: str | None
) -> None:
    """Before a service call that may start or send (webhook policy only): ask the host product what
    has no fresh answer, and keep its answers. `run(service, *args)` runs a service (the API's
    `call`); `where`: conversation_id, other_user_id or other_username."""
    if settings.conversation_policy != "webhook":
        return
    questions = await run(policy.open_questions, settings, actor, list(actions), **where)
    if not questions:
        return
    answered = await ask_all(settings, questions)
    if answered:
        await run(policy.record_answers, answered)


def consult_sync(
    sessions: sessionmaker[Session], settings: Settings, actor: User, actions: Sequence[Action], **where: str | None
) -> None:
    """consult for a worker (no event loop running): call it before `send_message` or
    `contact_user`, outside any transaction."""

    def run(service: Callable[..., Any], *args: Any) -> Any:
        with sessions() as session:
            return service(session, *args)

    consult_in_thread(run, settings, actor, actions, **where)


def consult_in_thread(
    run: Callable[..., Any], settings: Settings, actor: User, actions: Sequence[Action], **where: str | None
) -> None:
    """consult from a thread with no running event loop (a worker, the email pipeline), reaching the
    services through `run(service, *args)`."""
    if settings.conversation_policy != "webhook":
        return
    questions = run(functools.partial(policy.open_questions, **where), settings, actor, list(actions))
    if not questions:
        return
    answered = asyncio.run(ask_all(settings, questions))
    if answered:
        run(policy.record_answers, answered)
