"""Digests of unread messages, on both databases, into a real SMTP server (aiosmtpd): what beat's
`parley.digest_sweep` and `parley.digest_batch` do, with the clock moved instead of waited for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from integrations.email.sender import sender_for
from parley.api.app import init_app
from parley.cli import main
from parley.config import Settings
from parley.digest_times import next_digest_at
from parley.models import DigestItem, EmailDigest, OutgoingEmail, User, Weekday, utcnow
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.email_digests import due_digest_users, next_digest_for
from parley.services.messages import AttachmentDraft, MessageDraft, delete_message, send_message
from parley.services.read_receipts import mark_read
from parley.services.users import NewUser, NotificationSettingsChange, create_user, update_notification_settings
from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.email.smtp_sink import Received, SmtpSink
from workers.digest_tasks import run_digest_batch

URL_TEMPLATE = "https://app.parley.test/inbox/{conversation_id}"


@pytest.fixture
def digest_settings(email_settings: Settings) -> Settings:
    return email_settings.model_copy(update={"conversation_url_template": URL_TEMPLATE})


@dataclass(frozen=True)
class People:
    bob: User
    senders: dict[str, User]  # alice, carol, dave: each in a conversation with bob
    conversations: dict[str, str]


def _person(sessions: sessionmaker[Session], username: str, **extra: object) -> User:
    with sessions() as session:
        return create_user(session, NewUser(username=username, name=username.title(), email=f"{username}@example.com",
                                            **extra))  # type: ignore[arg-type]


@pytest.fixture
def people(sessions: sessionmaker[Session]) -> People:
    bob = _person(sessions, "bob", avatar_url=None)
    senders, conversations = {}, {}
    for name in ("alice", "carol", "dave"):
        sender = _person(sessions, name, avatar_url=f"https://img.parley.test/{name}.png")
        with sessions() as session:
            conversation, _ = get_or_create_conversation(session, sender, OtherUser(user_id=bob.id))
        senders[name], conversations[name] = sender, conversation.id
    return People(bob, senders, conversations)


def say(sessions: sessionmaker[Session], settings: Settings, people: People, name: str, text: str,
        attachments: tuple[AttachmentDraft, ...] = ()) -> str:
    with sessions() as session:
        message, _ = send_message(session, settings, people.senders[name], people.conversations[name],
                                  MessageDraft(content=text, attachments=attachments))
    return message.id


def next_due(sessions: sessionmaker[Session], user_id: str) -> datetime | None:
    with sessions() as session:
        return session.get(User, user_id).next_digest_at  # type: ignore[union-attr]


def sweep(sessions: sessionmaker[Session], settings: Settings, now: datetime, *, force: bool = False) -> int:
    """One beat sweep at `now`: the due users in batches, each batch recorded then sent."""
    with sessions() as session:
        due = due_digest_users(session, now)
    sent = 0
    for start in range(0, len(due), 250):
        prepared, outcomes = run_digest_batch(settings, sessions, sender_for(settings), due[start:start + 250],
                                              now=now, force=force)
        assert outcomes.get("sent", 0) == len(prepared.email_ids)
        sent += len(prepared.email_ids)
    return sent


def text_of(received: Received) -> str:
    return received.message.get_body(("plain",)).get_content()


def digests_to(sink: SmtpSink, address: str) -> list[Received]:
    return [r for r in sink.received if r.recipients == [address]]


def test_three_conversations_one_digest_then_nothing_then_only_the_new(
    sessions: sessionmaker[Session], digest_settings: Settings, sink: SmtpSink, people: People
) -> None:
    say(sessions, digest_settings, people, "alice", "Are we still on for Friday?")
    say(sessions, digest_settings, people, "alice", "x" * 500)
    say(sessions, digest_settings, people, "carol", "The contract",
        attachments=(AttachmentDraft(name="contract.pdf", url="https://files.parley.test/contract.pdf"),))
    say(sessions, digest_settings, people, "dave", "Lunch?")
    due = next_due(sessions, people.bob.id)
    assert due is not None and due.hour == 8 and due > utcnow()  # 08:00 UTC, the defaults
    assert sweep(sessions, digest_settings, due - timedelta(minutes=1)) == 0  # not due yet
    now = due + timedelta(minutes=2)
    assert sweep(sessions, digest_settings, now) == 1
    [digest] = digests_to(sink, "bob@example.com")
    message = digest.message
    assert message["Subject"] == "Your daily Parley digest: 4 unread messages in 3 conversations"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<https://parley.test/api/v1/email/unsubscribe/")
    assert ".digest." in message["List-Unsubscribe"]
    assert message["Auto-Submitted"] == "auto-generated"
    text = text_of(digest)
    # Most recent activity first, with names, unread counts, links, attachments named, the total.
    assert text.index("== Dave (1 unread)") < text.index("== Carol (1 unread)") < text.index("== Alice (2 unread)")
    assert "Are we still on for Friday?" in text and "x" * 200 not in text and "x" * 199 + "\u2026" in text
    assert "[attachment] contract.pdf" in text
    assert URL_TEMPLATE.format(conversation_id=people.conversations["carol"]) in text
    assert "Total: 4 unread messages in 3 conversations." in text
    assert message["List-Unsubscribe"].strip("<>") in text  # the footer links to the same
    html = message.get_body(("html",)).get_content()
    assert "https://img.parley.test/alice.png" in html and 'style="' in html
    # The next day: due again, but nothing new: no email. The one after: only the new message.
    tomorrow = next_due(sessions, people.bob.id)
    assert tomorrow == due + timedelta(days=1)
    assert sweep(sessions, digest_settings, tomorrow + timedelta(minutes=2)) == 0  # type: ignore[operator]
    assert sweep(sessions, digest_settings, now, force=True) == 0
    say(sessions, digest_settings, people, "carol", "One more thing")
    later = next_due(sessions, people.bob.id)
    assert sweep(sessions, digest_settings, later + timedelta(minutes=2)) == 1  # type: ignore[operator]
    second = digests_to(sink, "bob@example.com")[1]
    assert second.message["Subject"] == "Your daily Parley digest: 1 unread message in 1 conversation"
    second_text = text_of(second)
    assert "One more thing" in second_text and "Lunch?" not in second_text and "Friday" not in second_text
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DigestItem)) == 5
        assert session.scalar(select(func.count()).select_from(OutgoingEmail).where(OutgoingEmail.kind == "digest")) == 2


def test_read_and_deleted_messages_are_left_out(
    sessions: sessionmaker[Session], digest_settings: Settings, sink: SmtpSink, people: People
) -> None:
    say(sessions, digest_settings, people, "alice", "read this one")
    gone = say(sessions, digest_settings, people, "carol", "regret this")
    say(sessions, digest_settings, people, "carol", "keep this")
    with sessions() as session:
        mark_read(session, people.bob, people.conversations["alice"])
    with sessions() as session:
        delete_message(session, people.senders["carol"], gone)
    due = next_due(sessions, people.bob.id)
    assert sweep(sessions, digest_settings, due + timedelta(minutes=1)) == 1  # type: ignore[operator]
    [digest] = digests_to(sink, "bob@example.com")
    text = text_of(digest)
    assert "keep this" in text and "regret" not in text and "read this one" not in text and "Alice" not in text
    assert digest.message["Subject"].endswith("1 unread message in 1 conversation")


def test_off_users_get_nothing(
    sessions: sessionmaker[Session], digest_settings: Settings, sink: SmtpSink, people: People
) -> None:
    with sessions() as session:
        update_notification_settings(session, people.bob.id, NotificationSettingsChange(email_digest=EmailDigest.OFF))
    assert next_due(sessions, people.bob.id) is None  # off the index: never due
    say(sessions, digest_settings, people, "alice", "hello?")
    far = utcnow() + timedelta(days=30)
    assert people.bob.id not in due_digest_users(sessions(), far)
    assert sweep(sessions, digest_settings, far) == 0
    result = run_digest_batch(digest_settings, sessions, sender_for(digest_settings), [people.bob.id], force=True)
    assert result[0].email_ids == []
    assert sink.received == []


def test_next_digest_at_follows_the_zone_across_daylight_saving() -> None:
    def due(now: datetime, zone: str, frequency: str = "daily", weekday: str = "monday") -> datetime | None:
        return next_digest_at(now, enabled=True, frequency=frequency, zone=zone, hour=8, weekday=weekday)

    # Los Angeles springs forward on 2027-03-14: 08:00 is 16:00 UTC before, 15:00 UTC after.
    before = datetime(2027, 3, 13, 12, 0, tzinfo=UTC)
    assert due(before, "America/Los_Angeles") == datetime(2027, 3, 13, 16, 0, tzinfo=UTC)
    assert due(datetime(2027, 3, 13, 16, 0, tzinfo=UTC), "America/Los_Angeles") == datetime(2027, 3, 14, 15, 0, tzinfo=UTC)
    # ... and falls back on 2027-11-07.
    assert due(datetime(2027, 11, 6, 16, 0, tzinfo=UTC), "America/Los_Angeles") == datetime(2027, 11, 7, 16, 0, tzinfo=UTC)
    # Tokyo has no daylight saving: 08:00 JST is 23:00 UTC the day before.
    assert due(before, "Asia/Tokyo") == datetime(2027, 3, 13, 23, 0, tzinfo=UTC)
    assert due(datetime(2027, 3, 13, 23, 0, tzinfo=UTC), "Asia/Tokyo") == datetime(2027, 3, 14, 23, 0, tzinfo=UTC)
    # Weekly: the next Monday at 08:00 local (2027-03-15 is a Monday).
    assert due(before, "Europe/Paris", "weekly") == datetime(2027, 3, 15, 7, 0, tzinfo=UTC)
    assert due(before, "UTC", "weekly", "saturday") == datetime(2027, 3, 20, 8, 0, tzinfo=UTC)
    assert next_digest_at(before, enabled=True, frequency="off", zone="UTC", hour=8, weekday="monday") is None


def test_tokyo_and_los_angeles_are_due_at_their_own_eight_across_a_dst_change(
    sessions: sessionmaker[Session], digest_settings: Settings, sink: SmtpSink, people: People
) -> None:
    for name, zone in (("tokyo", "Asia/Tokyo"), ("angeleno", "America/Los_Angeles")):
        user = _person(sessions, name)
        with sessions() as session:
            update_notification_settings(session, user.id, NotificationSettingsChange(timezone=zone, digest_hour=8))
            get_or_create_conversation(session, people.senders["alice"], OtherUser(user_id=user.id))
    with sessions() as session, session.begin():
        # Bob and the senders out of the way: this test is about the two of them.
        session.execute(update(User).where(User.username.in_(["bob", "alice", "carol", "dave"]))
                        .values(next_digest_at=None))
        users = {u.username: u for u in session.scalars(select(User).where(User.username.in_(["tokyo", "angeleno"])))}
        start = datetime(2027, 3, 13, 0, 0, tzinfo=UTC)  # Los Angeles springs forward on 2027-03-14
        for user in users.values():
            user.next_digest_at = next_digest_for(user, start)
    alice = people.senders["alice"]
    got: dict[str, list[datetime]] = {"tokyo": [], "angeleno": []}
    for step in range(0, 48 * 4):  # every 15 minutes for two days
        now = start + timedelta(minutes=15 * step + 3)
        if step % 4 == 0:  # something new for both every hour
            for user in users.values():
                with sessions() as session:
                    conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=user.id))
                    send_message(session, digest_settings, alice, conversation.id, MessageDraft(content=f"at {now}"))
        before = len(sink.received)
        sweep(sessions, digest_settings, now)
        for received in sink.received[before:]:
            got[received.recipients[0].split("@")[0]].append(now)
    assert got["tokyo"] == [datetime(2027, 3, 13, 23, 3, tzinfo=UTC), datetime(2027, 3, 14, 23, 3, tzinfo=UTC)]
    assert got["angeleno"] == [datetime(2027, 3, 13, 16, 3, tzinfo=UTC), datetime(2027, 3, 14, 15, 3, tzinfo=UTC)]


@pytest.mark.parametrize("force", [False, True])
def test_two_racing_sweeps_send_one_digest(
    sessions: sessionmaker[Session], digest_settings: Settings, sink: SmtpSink, people: People, force: bool
) -> None:
    for n in range(5):
        say(sessions, digest_settings, people, "alice", f"message {n}")
    now = next_due(sessions, people.bob.id) + timedelta(minutes=1)  # type: ignore[operator]
    with sessions() as session:
        due = due_digest_users(session, now)
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            prepared, _ = run_digest_batch(digest_settings, sessions, sender_for(digest_settings), due, now=now,
                                           force=force)
            results.append(len(prepared.email_ids))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and sorted(results) == [0, 1]
    assert len(digests_to(sink, "bob@example.com")) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DigestItem)) == 5


@pytest.fixture
async def client(aiohttp_client: object, digest_settings: Settings) -> TestClient:
    return await aiohttp_client(init_app(digest_settings))  # type: ignore[operator]


async def test_one_click_post_turns_digests_off_and_get_does_not(
    client: TestClient, sessions: sessionmaker[Session], digest_settings: Settings, sink: SmtpSink, people: People
) -> None:
    say(sessions, digest_settings, people, "alice", "hello")
    sweep(sessions, digest_settings, next_due(sessions, people.bob.id) + timedelta(minutes=1))  # type: ignore[operator]
    [digest] = digests_to(sink, "bob@example.com")
    path = str(digest.message["List-Unsubscribe"]).strip("<>").removeprefix("https://parley.test")
    page = await client.get(path)
    assert page.status == 200 and "digests" in await page.text() and "<form method=\"post\"" in await page.text()
    with sessions() as session:
        bob = session.get(User, people.bob.id)
        assert bob.email_digest is EmailDigest.DAILY and bob.next_digest_at is not None  # type: ignore[union-attr]
    forged = path.replace(".digest.", ".notifications.")
    assert (await client.post(forged, data="List-Unsubscribe=One-Click")).status == 404
    done = await client.post(path, data="List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, allow_redirects=False)
    assert done.status == 200
    with sessions() as session:
        bob = session.get(User, people.bob.id)
        assert bob.email_digest is EmailDigest.OFF and bob.next_digest_at is None  # type: ignore[union-attr]
        assert bob.inbox_notifications  # type: ignore[union-attr]  # a digest's link leaves notifications alone


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, digest_settings: Settings) -> Iterator[None]:
    for name, value in {"DATABASE_URL": digest_settings.database_url, "SMTP_URL": digest_settings.smtp_url,
                        "SECRET_KEY": SECRET_KEY, "ADMIN_TOKEN": ADMIN_TOKEN, "PUBLIC_URL": "https://parley.test",
                        "CONVERSATION_URL_TEMPLATE": URL_TEMPLATE, "LOG_LEVEL": "WARNING"}.items():
        monkeypatch.setenv(f"PARLEY_{name}", str(value))
    yield


def test_cli_preview_dry_run_and_send(
    sessions: sessionmaker[Session], digest_settings: Settings, sink: SmtpSink, people: People, cli_env: None,
    tmp_path: Path,
) -> None:
    say(sessions, digest_settings, people, "alice", "preview me")
    runner = CliRunner()
    html = tmp_path / "digest.html"
    preview = runner.invoke(main, ["digests", "preview", "bob", "--html", str(html)])
    assert preview.exit_code == 0, preview.output
    assert "Subject: Your daily Parley digest: 1 unread message in 1 conversation" in preview.output
    assert "preview me" in preview.output and "preview me" in html.read_text()
    assert runner.invoke(main, ["digests", "preview", "alice"]).output.startswith("nothing new for alice")
    dry = runner.invoke(main, ["digests", "send", "--force", "--dry-run"])
    assert dry.exit_code == 0 and "bob@example.com: 1 messages in 1 conversations" in dry.output
    not_due = runner.invoke(main, ["digests", "send", "--user", "bob"])
    assert not_due.exit_code == 0 and "sent 0 digests" in not_due.output
    assert sink.received == []  # preview, dry runs and a user not due send nothing
    forced = runner.invoke(main, ["digests", "send", "--user", "bob", "--force"])
    assert forced.exit_code == 0 and "sent 1 digests (1 messages)" in forced.output, forced.output
    assert len(sink.wait_for(1)) == 1
    assert "sent 0 digests" in runner.invoke(main, ["digests", "send", "--force"]).output  # never twice
    assert runner.invoke(main, ["digests", "send", "--user", "nobody"]).exit_code != 0


def test_weekly_digest_waits_for_its_weekday(sessions: sessionmaker[Session], people: People) -> None:
    with sessions() as session:
        user = update_notification_settings(session, people.bob.id, NotificationSettingsChange(
            email_digest=EmailDigest.WEEKLY, digest_weekday=Weekday.WEDNESDAY, timezone="Europe/Paris", digest_hour=18))
        due = user.next_digest_at
    assert due is not None
    local = due.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert (local.weekday(), local.hour, local.minute) == (2, 18, 0)
    assert utcnow() < due <= utcnow() + timedelta(days=7)
