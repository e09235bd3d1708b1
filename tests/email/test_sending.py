"""Sending: the SMTP sender against a real SMTP server (aiosmtpd), the .eml folder, and the send
task's bookkeeping: every email recorded, sent once, retried on 4xx and connection errors, failed
on 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from integrations.email.compose import Outgoing, build_message, render
from integrations.email.sender import FolderSender, PermanentFailure, SmtpSender, TemporaryFailure, sender_for
from parley.config import Settings
from parley.models import EmailStatus, OutgoingEmail, utcnow
from tests.email.smtp_sink import SmtpSink
from tests.workers.conftest import free_port
from workers.email_tasks import deliver, deliver_many

RAW = b"From: a@parley.test\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <m1@parley.test>\r\n\r\nhello\r\n"


def test_smtp_sender_hands_the_message_to_the_server(sink: SmtpSink) -> None:
    SmtpSender(sink.url).send("a@parley.test", "b@example.com", RAW)
    [got] = sink.received
    assert got.envelope_from == "a@parley.test" and got.recipients == ["b@example.com"]
    assert got.message["Subject"] == "hi"


def test_4xx_is_temporary_5xx_permanent_and_no_server_temporary(sink: SmtpSink) -> None:
    sink.handler.answers = ["451 4.3.0 try again later", "550 5.1.1 no such mailbox"]
    with pytest.raises(TemporaryFailure, match="451"):
        SmtpSender(sink.url).send("a@parley.test", "b@example.com", RAW)
    with pytest.raises(PermanentFailure, match="550"):
        SmtpSender(sink.url).send("a@parley.test", "b@example.com", RAW)
    with pytest.raises(TemporaryFailure):
        SmtpSender(f"smtp://127.0.0.1:{free_port()}").send("a@parley.test", "b@example.com", RAW)


def test_smtp_urls() -> None:
    sender = SmtpSender("smtp+starttls://user%40x:p%3Ass@mail.example.com")
    assert (sender.scheme, sender.host, sender.port, sender.username, sender.password) == (
        "smtp+starttls", "mail.example.com", 587, "user@x", "p:ss")
    assert SmtpSender("smtps://mail.example.com").port == 465
    with pytest.raises(ValueError):
        SmtpSender("http://mail.example.com")


def test_the_folder_sender_writes_one_eml_per_email(tmp_path: Path) -> None:
    sender = sender_for(Settings(email_folder=str(tmp_path / "mail")))
    assert isinstance(sender, FolderSender)
    sender.send("a@parley.test", "b@example.com", RAW)
    sender.send("a@parley.test", "b@example.com", RAW)  # the same email again: the same file
    [written] = (tmp_path / "mail").glob("*.eml")
    assert written.name == "m1_parley.test.eml" and written.read_bytes() == RAW


def test_a_rendered_email_is_multipart_alternative_with_parley_headers(sink: SmtpSink) -> None:
    rendered = render("notification", {
        "recipient_name": "Bob", "other_name": "<Alice>", "reply_enabled": False, "unsubscribe_url": "https://u/1",
        "messages": [{"sender_name": "Alice", "avatar_url": None, "time": "now", "text": "<b>hi</b>",
                      "attachments": []}],
    })
    raw = build_message(Outgoing("Bob", "bob@example.com", rendered, "x1@parley.test", "Parley <n@parley.test>"))
    SmtpSender(sink.url).send("n@parley.test", "bob@example.com", raw)
    message = sink.received[0].message
    assert message.get_content_type() == "multipart/alternative"
    assert message["Auto-Submitted"] == "auto-generated" and message["X-Auto-Response-Suppress"] == "All"
    html = message.get_body(("html",)).get_content()
    assert "&lt;b&gt;hi&lt;/b&gt;" in html and "<b>hi" not in html  # autoescaped
    assert 'style="' in html and "<style" not in html  # CSS inlined
    assert "<b>hi</b>" in message.get_body(("plain",)).get_content()


def _record(sessions: sessionmaker[Session]) -> str:
    with sessions() as session, session.begin():
        email = OutgoingEmail(kind="test", recipient="b@example.com", message_id="m1@parley.test", subject="hi",
                              content=RAW.decode(), status=EmailStatus.PENDING, attempts=0, next_attempt_at=utcnow())
        session.add(email)
        session.flush()
        return email.id


def _email(sessions: sessionmaker[Session], email_id: str) -> OutgoingEmail:
    with sessions() as session:
        return session.scalars(select(OutgoingEmail).where(OutgoingEmail.id == email_id)).one()


def test_an_email_is_sent_once(sessions: sessionmaker[Session], email_settings: Settings, sink: SmtpSink) -> None:
    email_id = _record(sessions)
    sender = sender_for(email_settings)
    assert deliver(email_settings, sessions, sender, email_id) == "sent"
    assert deliver(email_settings, sessions, sender, email_id) == "skipped"
    assert len(sink.received) == 1
    assert _email(sessions, email_id).status is EmailStatus.SENT


def test_4xx_retries_then_sends_and_5xx_fails(sessions: sessionmaker[Session], email_settings: Settings,
                                              sink: SmtpSink, caplog: pytest.LogCaptureFixture) -> None:
    email_id = _record(sessions)
    sender = sender_for(email_settings)
    sink.handler.answers = ["421 4.4.2 busy"]
    assert deliver(email_settings, sessions, sender, email_id) == "retry"
    pending = _email(sessions, email_id)
    assert pending.status is EmailStatus.PENDING and "421" in (pending.last_error or "")
    assert pending.next_attempt_at is not None and pending.next_attempt_at > utcnow()
    with sessions() as session, session.begin():  # the retry's time has come
        session.get(OutgoingEmail, email_id).next_attempt_at = utcnow()  # type: ignore[union-attr]
    assert deliver(email_settings, sessions, sender, email_id) == "sent"
    assert _email(sessions, email_id).attempts == 2

    with sessions() as session, session.begin():
        session.execute(OutgoingEmail.__table__.delete())
    email_id = _record(sessions)
    sink.handler.answers = ["554 5.7.1 rejected"]
    assert deliver(email_settings, sessions, sender, email_id) == "failed"
    failed = _email(sessions, email_id)
    assert failed.status is EmailStatus.FAILED and "554" in (failed.last_error or "")
    assert any(r.message == "email.failed" for r in caplog.records)
    assert deliver(email_settings, sessions, sender, email_id) == "skipped"
    assert len(sink.received) == 1


def test_many_emails_share_one_connection_and_keep_their_own_outcomes(
    sessions: sessionmaker[Session], email_settings: Settings, sink: SmtpSink
) -> None:
    ids = []
    with sessions() as session, session.begin():
        for n in range(3):
            email = OutgoingEmail(kind="test", recipient=f"b{n}@example.com", message_id=f"many{n}@parley.test",
                                  subject="hi", content=RAW.decode().replace("m1@", f"many{n}@"),
                                  status=EmailStatus.PENDING, attempts=0, next_attempt_at=utcnow())
            session.add(email)
            session.flush()
            ids.append(email.id)
    sink.handler.answers = ["250 OK", "550 5.1.1 no such mailbox"]  # the first taken but dropped here
    outcomes = deliver_many(email_settings, sessions, sender_for(email_settings), ids)
    assert outcomes == {ids[0]: "sent", ids[1]: "failed", ids[2]: "sent"}
    assert [r.recipients for r in sink.received] == [["b2@example.com"]]
    assert [_email(sessions, i).status for i in ids] == [EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.SENT]
    assert deliver_many(email_settings, sessions, sender_for(email_settings), ids) == dict.fromkeys(ids, "skipped")
