"""Transactions compose: a service called inside an open `transaction()` joins it, so the outer
caller commits everything or nothing; and the one "events committed" hook runs once after each
outermost commit that recorded events, never after a rollback or a commit without events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.db import create_sync_db_engine, reading, set_events_committed_hook, sync_session_factory, transaction
from parley.models import Event, Message, User
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.messages import MessageDraft, list_history, send_message
from parley.services.users import NewUser, create_user


class Boom(Exception):
    """The outer caller's own failure, after the inner operations succeeded."""


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_sync_db_engine(settings)
    yield engine
    engine.dispose()


def _pair(sessions: sessionmaker[Session]) -> tuple[User, User, str]:
    with sessions() as session:
        alice = create_user(session, NewUser(username="alice", name="Alice"))
        bob = create_user(session, NewUser(username="bob", name="Bob"))
        conversation, created = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
    assert created
    return alice, bob, conversation.id


def _messages(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Message.content).order_by(Message.id)))


def _event_types(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Event.type).order_by(Event.id)))


# --- nesting -----------------------------------------------------------------------------------


def test_a_send_inside_an_outer_transaction_is_undone_when_the_outer_block_fails(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    alice, _bob, conversation_id = _pair(sessions)
    events_before = _event_types(sessions)

    with sessions() as session:
        with pytest.raises(Boom):
            with transaction(session):
                sent, created = send_message(session, settings, alice, conversation_id, MessageDraft(content="hello"))
                assert created
                # The send joined the outer transaction: it sees its own message...
                with reading(session):
                    page = list_history(session, alice, conversation_id)
                assert [m.id for m in page.items] == [sent.id]
                # ...and nobody else does yet: the inner operation did not commit on its own.
                assert _messages(sessions) == []
                raise Boom

    assert _messages(sessions) == []
    assert _event_types(sessions) == events_before == ["conversation.created"]


def test_two_sends_in_one_outer_transaction_commit_together(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    alice, bob, conversation_id = _pair(sessions)
    with sessions() as session, transaction(session):
        send_message(session, settings, alice, conversation_id, MessageDraft(content="one"))
        send_message(session, settings, bob, conversation_id, MessageDraft(content="two", client_id="c-2"))
        assert _messages(sessions) == []  # nothing visible before the outer commit
    assert _messages(sessions) == ["one", "two"]
    assert _event_types(sessions) == ["conversation.created", "message.created", "message.created"]


def test_first_contact_inside_a_failing_outer_transaction_leaves_no_conversation(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    with sessions() as session:
        alice = create_user(session, NewUser(username="alice", name="Alice"))
        bob = create_user(session, NewUser(username="bob", name="Bob"))
    with sessions() as session:
        with pytest.raises(Boom):
            with transaction(session):
                get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
                raise Boom
    _, created = _create_conversation(sessions, alice, bob)
    assert created  # the rolled-back one never existed
    assert _event_types(sessions) == ["conversation.created"]


def _create_conversation(sessions: sessionmaker[Session], alice: User, bob: User) -> tuple[str, bool]:
    with sessions() as session:
        conversation, created = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
    return conversation.id, created


# --- the events-committed hook -------------------------------------------------------------------


class HookCalls:
    """Each call of the hook, with how many messages a separate session could see at that moment
    (proving the hook runs after the commit, not before)."""

    def __init__(self, observer: sessionmaker[Session]) -> None:
        self.observer = observer
        self.visible_messages: list[int] = []

    def __call__(self) -> None:
        with self.observer() as session:
            self.visible_messages.append(int(session.scalar(select(func.count()).select_from(Message)) or 0))

    @property
    def count(self) -> int:
        return len(self.visible_messages)


@pytest.fixture
def hooked(engine: Engine) -> tuple[sessionmaker[Session], HookCalls]:
    """A session factory with the hook installed, as the API and the workers install theirs; the
    hook observes through a factory of its own (without a hook)."""
    factory = sync_session_factory(engine)
    calls = HookCalls(sync_session_factory(engine))
    set_events_committed_hook(factory, calls)
    return factory, calls


def test_the_hook_runs_once_after_an_outermost_commit_with_two_sends(
    hooked: tuple[sessionmaker[Session], HookCalls], sessions: sessionmaker[Session], settings: Settings
) -> None:
    factory, calls = hooked
    alice, bob, conversation_id = _pair(sessions)  # not through the hooked factory

    with factory() as session, transaction(session):
        send_message(session, settings, alice, conversation_id, MessageDraft(content="one"))
        send_message(session, settings, bob, conversation_id, MessageDraft(content="two"))
        assert calls.count == 0  # nothing committed yet
    assert calls.visible_messages == [2]  # once, and after both messages were visible


def test_a_send_with_a_client_id_calls_the_hook_after_its_commit(
    hooked: tuple[sessionmaker[Session], HookCalls], sessions: sessionmaker[Session], settings: Settings
) -> None:
    """A client_id send writes its message and event in a savepoint (to survive a lost race).
    Releasing a savepoint commits nothing: the hook must wait for the real commit, or whoever it
    wakes looks before the message is there (and is not woken again)."""
    factory, calls = hooked
    alice, _bob, conversation_id = _pair(sessions)
    with factory() as session:
        send_message(session, settings, alice, conversation_id, MessageDraft(content="one", client_id="k1"))
    assert calls.visible_messages == [1]


def test_sends_with_client_ids_in_one_outer_transaction_call_the_hook_once_after_commit(
    hooked: tuple[sessionmaker[Session], HookCalls], sessions: sessionmaker[Session], settings: Settings
) -> None:
    factory, calls = hooked
    alice, bob, conversation_id = _pair(sessions)
    with factory() as session, transaction(session):
        send_message(session, settings, alice, conversation_id, MessageDraft(content="one", client_id="k1"))
        send_message(session, settings, bob, conversation_id, MessageDraft(content="two", client_id="k2"))
        assert calls.count == 0  # nothing committed yet
    assert calls.visible_messages == [2]


def test_the_hook_runs_once_per_commit_of_a_service_called_on_its_own(
    hooked: tuple[sessionmaker[Session], HookCalls], sessions: sessionmaker[Session], settings: Settings
) -> None:
    factory, calls = hooked
    alice, _bob, conversation_id = _pair(sessions)
    with factory() as session:
        send_message(session, settings, alice, conversation_id, MessageDraft(content="one"))
        assert calls.visible_messages == [1]
        send_message(session, settings, alice, conversation_id, MessageDraft(content="two"))
    assert calls.visible_messages == [1, 2]


def test_the_hook_does_not_run_on_rollback_nor_on_a_later_commit_without_events(
    hooked: tuple[sessionmaker[Session], HookCalls], sessions: sessionmaker[Session], settings: Settings
) -> None:
    factory, calls = hooked
    alice, _bob, conversation_id = _pair(sessions)

    with factory() as session:
        with pytest.raises(Boom):
            with transaction(session):
                send_message(session, settings, alice, conversation_id, MessageDraft(content="lost"))
                raise Boom
        assert calls.count == 0
        # The same session commits again, this time without an event: the rolled-back event's mark
        # must not carry over into it.
        create_user(session, NewUser(username="carol", name="Carol"))
        assert calls.count == 0
    assert _messages(sessions) == []
    assert len(_event_types(sessions)) == 1  # conversation.created only: the send left nothing


def test_the_hook_does_not_run_on_a_commit_that_recorded_no_event(
    hooked: tuple[sessionmaker[Session], HookCalls],
) -> None:
    factory, calls = hooked
    with factory() as session:
        create_user(session, NewUser(username="dave", name="Dave"))  # a write, no event
        with transaction(session):
            create_user(session, NewUser(username="erin", name="Erin"))
    assert calls.count == 0


def test_the_hook_runs_for_a_first_contact_once(
    hooked: tuple[sessionmaker[Session], HookCalls], sessions: sessionmaker[Session], settings: Settings
) -> None:
    """contact_user records conversation.created and message.created in one transaction: one call."""
    from parley.services.contact import contact_user

    factory, calls = hooked
    with sessions() as session:
        alice = create_user(session, NewUser(username="alice", name="Alice"))
        bob = create_user(session, NewUser(username="bob", name="Bob"))
    with factory() as session:
        contact = contact_user(session, settings, alice, OtherUser(user_id=bob.id), MessageDraft(content="hi"))
    assert contact.created and contact.message is not None
    assert calls.visible_messages == [1]
    assert _event_types(sessions) == ["conversation.created", "message.created"]


def test_a_write_never_joins_a_transaction_a_bare_read_began(sessions: sessionmaker[Session], settings: Settings) -> None:
    """A read outside any unit of work begins a transaction implicitly; a send joining it would be
    rolled back unseen when the session closes. It is refused loudly instead, and nothing is written."""
    alice, _, conversation_id = _pair(sessions)
    with sessions() as session:
        session.get(User, alice.id)  # autobegins
        with pytest.raises(RuntimeError, match="implicitly"):
            send_message(session, settings, alice, conversation_id, MessageDraft(content="lost?", client_id="k1"))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
