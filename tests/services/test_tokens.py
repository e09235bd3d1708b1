from __future__ import annotations

from sqlalchemy import select

from parley.models import ApiToken, utcnow
from parley.services.tokens import authenticate, create_token, revoke_token
from tests.services.conftest import MakeUser


async def test_a_token_records_when_it_was_last_used(sessions, make_user: MakeUser) -> None:
    alice = make_user("alice")
    with sessions() as session:
        minted = create_token(session, alice.id, "laptop")
    assert minted.token.last_used_at is None

    before = utcnow()
    with sessions() as session:
        user = authenticate(session, minted.secret)

    assert user is not None and user.id == alice.id
    with sessions() as session:
        stored = (session.execute(select(ApiToken))).scalar_one()
    assert stored.last_used_at is not None and stored.last_used_at >= before
    assert stored.token_hash != minted.secret and minted.secret not in stored.token_hash


async def test_a_revoked_or_unknown_token_authenticates_nobody(sessions, make_user: MakeUser) -> None:
    alice = make_user("alice")
    with sessions() as session:
        minted = create_token(session, alice.id)
    with sessions() as session:
        revoke_token(session, minted.token.id, actor_id=alice.id)
    with sessions() as session:
        assert authenticate(session, minted.secret) is None
        assert authenticate(session, "plt_" + "x" * 43) is None
        assert authenticate(session, "not-even-a-parley-token") is None
