"""Replies by email, on both databases: a notification's Reply-To is answered with raw replies
quoted the way Gmail, Outlook and Apple Mail quote, sent to `parley mail-in` over real SMTP (a
subprocess) and to POST /api/v1/inbound/email."""

from __future__ import annotations

import json
import smtplib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from parley.api.app import init_app
from parley.config import Settings
from parley.models import Attachment, Message, MessageSource, User
from parley.services.blocks import block_user
from parley.services.email_notifications import revoke_reply_token
from tests.email import replies
from tests.email.conftest import EmailPair
from tests.email.smtp_sink import SmtpSink
from tests.email.test_notifications import consume_all, send, window_end
from tests.safety.conftest import POLICY_SECRET
from tests.webhooks.receiver import Answer as ReceiverAnswer
from tests.webhooks.receiver import Receiver, running_receiver
from tests.workers.conftest import Processes, free_port, processes, wait_until  # noqa: F401 (a fixture)

INBOUND_SECRET = "inbound-secret-0123456789"


@pytest.fixture
def reply_to(sessions: sessionmaker[Session], email_settings: Settings, sink: SmtpSink, pair: EmailPair) -> str:
    """Alice writes; Bob gets a notification; its Reply-To."""
    send(sessions, email_settings, pair.alice, pair.conversation_id, "are we still on?")
    consume_all(sessions)
    window_end(sessions, email_settings, sink)
    return str(sink.wait_for(1)[0].message["Reply-To"])


def bob_messages(sessions: sessionmaker[Session], pair: EmailPair) -> list[Message]:
    with sessions() as session:
        return list(session.scalars(select(Message).where(Message.sender_id == pair.bob.id).order_by(Message.id)))


@pytest.fixture
def http_settings(email_settings: Settings) -> Settings:
    return email_settings.model_copy(update={"inbound_email_secret": SecretStr(INBOUND_SECRET)})


async def post_raw(client: TestClient, raw: bytes, secret: str = INBOUND_SECRET) -> tuple[int, dict[str, object]]:
    response = await client.post("/api/v1/inbound/email", data=raw, headers={
        "Authorization": f"Bearer {secret}", "Content-Type": "message/rfc822"})
    return response.status, await response.json()


@pytest.fixture
async def client(aiohttp_client: object, http_settings: Settings) -> TestClient:
    return await aiohttp_client(init_app(http_settings))  # type: ignore[operator]


async def test_http_replies_land_stripped_and_loops_are_dropped(
    client: TestClient, sessions: sessionmaker[Session], pair: EmailPair, reply_to: str
) -> None:
    status, body = await post_raw(client, replies.gmail("bob@example.com", reply_to, "Yes, see you at 5!",
                                                        attachment=replies.PNG))
    assert status == 202, body
    status, body = await post_raw(client, replies.gmail("bob@example.com", reply_to, "Yes, see you at 5!",
                                                        attachment=replies.PNG))
    assert (status, body) == (200, {"ignored": "duplicate"})  # the same reply twice posts once
    status, _ = await post_raw(client, replies.outlook("BOB@example.com", reply_to, "Tomorrow works too."))
    assert status == 202
    status, _ = await post_raw(client, replies.apple_mail_html_only("bob@example.com", reply_to, "Great, thanks!"))
    assert status == 202
    for raw, reason in (
        (replies.out_of_office("bob@example.com", reply_to), "auto_submitted"),
        (replies.bounce(reply_to), "delivery_report"),
        (replies.gmail("mallory@example.com", reply_to, "forged", "<forged@x>"), "from_mismatch"),
        (replies.gmail("bob@example.com", "reply+aaaaaaaaaaaaaaaaaaaaaaaaaa@reply.parley.test", "x", "<u@x>"),
         "unknown_token"),
        (replies.gmail("bob@example.com", reply_to, "", "<empty@x>"), "empty"),
    ):
        assert await post_raw(client, raw) == (200, {"ignored": reason})
    assert (await post_raw(client, replies.gmail("bob@example.com", reply_to, "x"), "wrong-secret-000000"))[0] == 401

    posted = bob_messages(sessions, pair)
    assert [m.content for m in posted] == ["Yes, see you at 5!", "Tomorrow works too.", "Great, thanks!"]
    assert all(m.source is MessageSource.EMAIL for m in posted)
    with sessions() as session:
        [photo] = session.scalars(select(Attachment).where(Attachment.message_id == posted[0].id)).all()
    assert (photo.name, photo.content_type) == ("photo.png", "image/png")


async def test_a_revoked_token_and_the_rate_limit(
    client: TestClient, sessions: sessionmaker[Session], pair: EmailPair, reply_to: str, http_settings: Settings
) -> None:
    for n in range(http_settings.email_reply_rate_per_hour):
        status, _ = await post_raw(client, replies.gmail("bob@example.com", reply_to, f"reply {n}", f"<r{n}@x>"))
        assert status == 202
    assert await post_raw(client, replies.gmail("bob@example.com", reply_to, "one too many", "<r-last@x>")) == (
        200, {"ignored": "rate_limited"})
    with sessions() as session:
        assert revoke_reply_token(session, pair.bob.id, pair.conversation_id)
    assert await post_raw(client, replies.gmail("bob@example.com", reply_to, "after", "<r-after@x>")) == (
        200, {"ignored": "unknown_token"})


@pytest.fixture
def mail_in(processes: Processes, email_settings: Settings, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {
        "PARLEY_DATABASE_URL": email_settings.database_url,
        "PARLEY_SECRET_KEY": email_settings.secret_key.get_secret_value(),  # type: ignore[union-attr]
        "PARLEY_EMAIL_REPLY_DOMAIN": email_settings.email_reply_domain or "",
        "PARLEY_EMAIL_FROM": email_settings.email_from,
        "PARLEY_STORAGE_PATH": email_settings.storage_path,
        "PARLEY_EMAIL_MAX_INBOUND_BYTES": "200000",
        "PARLEY_BROKER_URL": email_settings.broker_url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    import os
    full = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")} | env
    process = processes.start("mail-in", [sys.executable, "-m", "parley.cli", "mail-in", "--port", str(port)], full,
                              cwd=tmp_path)
    wait_until(lambda: "email.mail_in_listening" in process.output(), timeout=30, what="mail-in", log=process.output)
    yield port


def test_mail_in_over_smtp(mail_in: int, sessions: sessionmaker[Session], pair: EmailPair, reply_to: str) -> None:
    with smtplib.SMTP("127.0.0.1", mail_in, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("bob@example.com", ["reply+bbbbbbbbbbbbbbbbbbbbbbbbbb@reply.parley.test"], b"x")
        assert next(iter(refused.value.recipients.values()))[0] == 550
    with smtplib.SMTP("127.0.0.1", mail_in, timeout=10) as smtp:
        smtp.sendmail("bob@example.com", [reply_to],
                      replies.gmail("bob@example.com", reply_to, "Sounds good!", attachment=replies.PNG))
        smtp.sendmail("bob@example.com", [reply_to],
                      replies.gmail("bob@example.com", reply_to, "Sounds good!", attachment=replies.PNG))  # again
        smtp.sendmail("", [reply_to], replies.out_of_office("bob@example.com", reply_to))
        with pytest.raises(smtplib.SMTPResponseException) as too_big:
            smtp.sendmail("bob@example.com", [reply_to],
                          replies.gmail("bob@example.com", reply_to, "big", "<big@x>", attachment=b"\0" * 300_000))
        assert too_big.value.smtp_code == 552
    wait_until(lambda: bob_messages(sessions, pair), timeout=20, what="the reply to land")
    [posted] = bob_messages(sessions, pair)
    assert posted.content == "Sounds good!" and posted.source is MessageSource.EMAIL
    with sessions() as session:
        assert len(session.scalars(select(Attachment).where(Attachment.message_id == posted.id)).all()) == 1


async def test_one_click_unsubscribe(client: TestClient, sessions: sessionmaker[Session], pair: EmailPair,
                                     reply_to: str, sink: SmtpSink) -> None:
    url = str(sink.received[0].message["List-Unsubscribe"]).strip("<>")
    path = url.removeprefix("https://parley.test")
    page = await client.get(path)
    assert page.status == 200 and "Unsubscribe" in await page.text()
    with sessions() as session:
        assert session.get(User, pair.bob.id).inbox_notifications  # type: ignore[union-attr]  # a GET changes nothing
    forged = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")
    assert (await client.post(forged, data="List-Unsubscribe=One-Click")).status == 404
    done = await client.post(path, data="List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status == 200
    with sessions() as session:
        assert not session.get(User, pair.bob.id).inbox_notifications  # type: ignore[union-attr]


async def test_a_reply_the_send_rules_refuse_is_dropped_with_their_code(
    client: TestClient, sessions: sessionmaker[Session], pair: EmailPair, reply_to: str
) -> None:
    """A reply by email is a send like any other: when Alice has blocked Bob since the notification,
    his reply is dropped (200, the rule's code as the reason), not answered with an error that would
    make the provider deliver it again, and nothing is posted."""
    with sessions() as session:
        block_user(session, pair.alice, pair.bob.id)
    raw = replies.gmail("bob@example.com", reply_to, "let me in", "<blocked@x>")
    assert await post_raw(client, raw) == (200, {"ignored": "blocked"})
    assert bob_messages(sessions, pair) == []


async def test_a_reply_outside_any_relationship_is_dropped_under_that_policy(
    aiohttp_client: object, sessions: sessionmaker[Session], pair: EmailPair, reply_to: str, http_settings: Settings
) -> None:
    """PARLEY_CONVERSATION_POLICY=relationships applies to replies by email as to every send: with
    no active relationship between them, Bob's reply is dropped as policy_denied."""
    strict = http_settings.model_copy(update={"conversation_policy": "relationships"})
    client: TestClient = await aiohttp_client(init_app(strict))  # type: ignore[operator]
    raw = replies.gmail("bob@example.com", reply_to, "still there?", "<policy@x>")
    assert await post_raw(client, raw) == (200, {"ignored": "policy_denied"})
    assert bob_messages(sessions, pair) == []


@pytest.fixture
def policy_receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.mark.parametrize("allow", [True, False])
async def test_under_the_webhook_policy_a_reply_asks_the_host_product_first(
    aiohttp_client: object, sessions: sessionmaker[Session], pair: EmailPair, reply_to: str,
    http_settings: Settings, policy_receiver: Receiver, allow: bool,
) -> None:
    """The email pipeline asks PARLEY_POLICY_URL (signed) whether Bob may send, as the API does
    before a REST send: allowed, the reply is posted; denied, it is dropped as policy_denied."""
    answer = {"allow": True} if allow else {"allow": False, "reason": "no active contract"}
    policy_receiver.script("policy", ReceiverAnswer(body=json.dumps(answer)))
    policy_receiver.expect_secrets("policy", POLICY_SECRET)
    asking = http_settings.model_copy(update={
        "conversation_policy": "webhook", "policy_url": policy_receiver.url("policy"),
        "policy_secret": SecretStr(POLICY_SECRET), "webhook_allowed_cidrs": ["127.0.0.1/32"],
        "policy_timeout_seconds": 2.0,
    })
    client: TestClient = await aiohttp_client(init_app(asking))  # type: ignore[operator]
    raw = replies.gmail("bob@example.com", reply_to, "on my way", "<asked@x>")
    status, body = await post_raw(client, raw)
    [asked] = policy_receiver.requests("policy")
    assert (asked.json["action"], asked.json["from"], asked.json["to"]) == ("send", pair.bob.id, pair.alice.id)
    if allow:
        assert status == 202
        assert [m.content for m in bob_messages(sessions, pair)] == ["on my way"]
    else:
        assert (status, body) == (200, {"ignored": "policy_denied"})
        assert bob_messages(sessions, pair) == []
