"""Notifications of unread messages, on both databases: the consumer opens the window, its end
records at most one email (what the worker's window task does, with the clock moved instead of
waited for), and the email goes to a real SMTP server where it is parsed with `email`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from integrations.email.notifications import compose_notification, thread_root_id
from integrations.email.sender import sender_for
from parley.config import Settings
from parley.models import EmailThread, Event, OutgoingEmail, User, utcnow
from parley.outbox.receipts import consume_batch
from parley.services.email_notifications import due_threads, prepare_notification
from parley.services.messages import MessageDraft, delete_message, send_message
from parley.services.read_receipts import mark_read
from tests.email.conftest import EmailPair
from tests.email.smtp_sink import SmtpSink
from workers.email_tasks import EMAIL_CONSUMER, deliver


def send(sessions: sessionmaker[Session], settings: Settings, sender: User, conversation_id: str, text: str) -> str:
    with sessions() as session:
        message, _ = send_message(session, settings, sender, conversation_id, MessageDraft(content=text))
    return message.id


def consume_all(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        ids = list(session.scalars(select(Event.id).where(Event.type == "message.created").order_by(Event.id)))
    consume_batch(sessions, EMAIL_CONSUMER, ids)


def window_end(sessions: sessionmaker[Session], settings: Settings, sink: SmtpSink, *, connected: bool = False,
               after: float = 121.0) -> list[str]:
    """What parley.email_notify_due and parley.send_email do, at `after` seconds from now."""
    now = utcnow() + timedelta(seconds=after)
    sent = []
    with sessions() as session:
        due = due_threads(session, now)
    for user_id, conversation_id in due:
        with sessions() as session:
            email_id = prepare_notification(session, settings, user_id, conversation_id, connected=connected,
                                            compose=lambda facts: compose_notification(settings, facts), now=now)
        if email_id is not None:
            assert deliver(settings, sessions, sender_for(settings), email_id) == "sent"
            sent.append(email_id)
    return sent


def test_a_burst_of_three_gives_one_email(sessions: sessionmaker[Session], email_settings: Settings,
                                          sink: SmtpSink, pair: EmailPair) -> None:
    for text in ("one", "two", "three"):
        send(sessions, email_settings, pair.alice, pair.conversation_id, text)
    consume_all(sessions)
    assert window_end(sessions, email_settings, sink, after=60) == []  # the window is still open
    assert len(window_end(sessions, email_settings, sink)) == 1
    assert window_end(sessions, email_settings, sink, after=1000) == []  # never twice
    [got] = sink.received
    message = got.message
    assert got.recipients == ["bob@example.com"]
    assert message["Subject"] == "Conversation with Alice"
    text = message.get_body(("plain",)).get_content()
    assert all(word in text for word in ("one", "two", "three"))
    assert message["Auto-Submitted"] == "auto-generated" and message["X-Auto-Response-Suppress"] == "All"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<https://parley.test/api/v1/email/unsubscribe/")
    assert message["Reply-To"].startswith("reply+") and message["Reply-To"].endswith("@reply.parley.test")


def test_reading_within_the_window_gives_none(sessions: sessionmaker[Session], email_settings: Settings,
                                              sink: SmtpSink, pair: EmailPair) -> None:
    send(sessions, email_settings, pair.alice, pair.conversation_id, "are you there?")
    consume_all(sessions)
    with sessions() as session:
        mark_read(session, pair.bob, pair.conversation_id)
    assert window_end(sessions, email_settings, sink) == []
    assert sink.received == []


def test_a_connected_user_gets_none(sessions: sessionmaker[Session], email_settings: Settings,
                                    sink: SmtpSink, pair: EmailPair) -> None:
    send(sessions, email_settings, pair.alice, pair.conversation_id, "hello")
    consume_all(sessions)
    assert window_end(sessions, email_settings, sink, connected=True) == []
    # Those messages are settled: a later burst's email lists only the later ones.
    send(sessions, email_settings, pair.alice, pair.conversation_id, "later")
    consume_all(sessions)
    window_end(sessions, email_settings, sink)
    text = sink.received[0].message.get_body(("plain",)).get_content()
    assert "later" in text and "hello" not in text


def test_thread_headers_chain_and_no_message_is_in_two_emails(
    sessions: sessionmaker[Session], email_settings: Settings, sink: SmtpSink, pair: EmailPair
) -> None:
    first = send(sessions, email_settings, pair.alice, pair.conversation_id, "first burst")
    deleted = send(sessions, email_settings, pair.alice, pair.conversation_id, "regret this")
    with sessions() as session:
        delete_message(session, pair.alice, deleted)
    consume_all(sessions)
    window_end(sessions, email_settings, sink)
    send(sessions, email_settings, pair.alice, pair.conversation_id, "second burst")
    consume_all(sessions)
    window_end(sessions, email_settings, sink, after=300)
    one, two = (r.message for r in sink.wait_for(2))
    root = f"<{thread_root_id(email_settings, pair.conversation_id, pair.bob.id)}>"
    assert one["Message-ID"] != two["Message-ID"]
    assert one["In-Reply-To"] == two["In-Reply-To"] == one["References"] == two["References"] == root
    assert one["Subject"] == two["Subject"] == "Conversation with Alice"
    assert one["Reply-To"] == two["Reply-To"]  # one reply address per (user, conversation)
    text_one = one.get_body(("plain",)).get_content()
    text_two = two.get_body(("plain",)).get_content()
    assert "first burst" in text_one and "regret" not in text_one and "deleted" not in text_one
    assert "second burst" in text_two and "first burst" not in text_two
    assert first


def test_notifications_off_or_no_email_gives_none(sessions: sessionmaker[Session], email_settings: Settings,
                                                  sink: SmtpSink, pair: EmailPair) -> None:
    with sessions() as session, session.begin():
        session.get(User, pair.bob.id).inbox_notifications = False  # type: ignore[union-attr]
    send(sessions, email_settings, pair.alice, pair.conversation_id, "hello")
    consume_all(sessions)
    assert window_end(sessions, email_settings, sink) == []
    with sessions() as session:
        assert session.scalars(select(EmailThread)).all() == []
        assert session.scalars(select(OutgoingEmail)).all() == []


@pytest.mark.parametrize("redelivered", [True])
def test_a_redelivered_event_opens_no_second_window(sessions: sessionmaker[Session], email_settings: Settings,
                                                    sink: SmtpSink, pair: EmailPair, redelivered: bool) -> None:
    send(sessions, email_settings, pair.alice, pair.conversation_id, "hello")
    consume_all(sessions)
    consume_all(sessions)  # duplicates: receipts
    assert len(window_end(sessions, email_settings, sink)) == 1
    assert redelivered
