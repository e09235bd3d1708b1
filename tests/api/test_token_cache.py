"""The per-process token cache: entries expire, a revocation drops a user's entries, and a lookup
that began before a revocation cannot put back what the revocation removed."""

from __future__ import annotations

from parley.api.token_cache import TokenCache
from parley.models import User


def _user(user_id: str = "01HZZZZZZZZZZZZZZZZZZZZZZZ") -> User:
    return User(id=user_id, username="alice", name="Alice", kind="user")


def test_a_cached_user_comes_back_as_a_fresh_object() -> None:
    cache = TokenCache(ttl=60)
    cache.put("h", _user(), cache.generation)
    first, second = cache.get("h"), cache.get("h")
    assert first is not None and second is not None
    assert first.username == "alice" and first is not second


def test_entries_expire_and_a_zero_ttl_caches_nothing() -> None:
    expired = TokenCache(ttl=1e-9)
    expired.put("h", _user(), expired.generation)
    assert expired.get("h") is None
    off = TokenCache(ttl=0)
    off.put("h", _user(), off.generation)
    assert off.get("h") is None


def test_forgetting_a_user_drops_only_their_entries() -> None:
    cache = TokenCache(ttl=60)
    cache.put("alice-1", _user("01HAAAAAAAAAAAAAAAAAAAAAAA"), cache.generation)
    cache.put("alice-2", _user("01HAAAAAAAAAAAAAAAAAAAAAAA"), cache.generation)
    cache.put("bob", _user("01HBBBBBBBBBBBBBBBBBBBBBBB"), cache.generation)
    cache.forget_user("01HAAAAAAAAAAAAAAAAAAAAAAA")
    assert cache.get("alice-1") is None and cache.get("alice-2") is None
    assert cache.get("bob") is not None


def test_a_lookup_that_began_before_a_revocation_is_not_cached() -> None:
    cache = TokenCache(ttl=60)
    began = cache.generation  # a request starts its database lookup...
    cache.forget_user("01HZZZZZZZZZZZZZZZZZZZZZZZ")  # ...the token is revoked meanwhile...
    cache.put("h", _user(), began)  # ...and the lookup's (stale) answer arrives
    assert cache.get("h") is None


def test_the_cache_is_bounded() -> None:
    cache = TokenCache(ttl=60, max_entries=3)
    for n in range(5):
        cache.put(f"h{n}", _user(), cache.generation)
    assert [cache.get(f"h{n}") is not None for n in range(5)] == [False, False, True, True, True]
