from __future__ import annotations

from sqlalchemy import select

from parley.models import ApiToken, utcnow
from parley.services.tokens import authenticate, create_token, revoke_token
from tests.services.conftest import MakeUser


async def test_a_token_records_when_it_was_last_used(sessions, make_user: MakeUser) -> None:
    alice = await make_user("alice")
    async with sessions() as session:
        minted = await create_token(session, alice.id, "laptop")
    assert minted.token.last_used_at is None

    before = utcnow()
    async with sessions() as session:
        user = await authenticate(session, minted.secret)

    assert user is not None and user.id == alice.id
    async with sessions() as session:
        stored = (await session.execute(select(ApiToken))).scalar_one()
    assert stored.last_used_at is not None and stored.last_used_at >= before
    assert stored.token_hash != minted.secret and minted.secret not in stored.token_hash


async def test_a_revoked_or_unknown_token_authenticates_nobody(sessions, make_user: MakeUser) -> None:
    alice = await make_user("alice")
    async with sessions() as session:
        minted = await create_token(session, alice.id)
    async with sessions() as session:
        await revoke_token(session, minted.token.id, actor_id=alice.id)
    async with sessions() as session:
        assert await authenticate(session, minted.secret) is None
        assert await authenticate(session, "plt_" + "x" * 43) is None
        assert await authenticate(session, "not-even-a-parley-token") is None
