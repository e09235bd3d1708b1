"""The SSRF guard with the real resolver, and the sender refusing at delivery time what the guard
refuses, before any byte reaches the receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parley.config import load_settings
from parley.models import utcnow
from parley.services.webhook_deliveries import ClaimedDelivery
from parley.services.webhooks import new_signing_secret
from tests.webhooks.receiver import Receiver, running_receiver
from webhooks.sender import send
from webhooks.ssrf import UrlGuard, UrlNotAllowed
from webhooks.transport import client_session


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


GUARD = UrlGuard(load_settings())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[fc00::1]/", "unique local"),
        ("http://[fd12:3456::1]/", "unique local"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("http://[::ffff:8.8.8.8]/", "IPv4-mapped"),
        ("http://[64:ff9b::a00:1]/", "NAT64"),
        ("http://[2002:a00:1::1]/", "6to4"),
        ("http://localhost/", "loopback"),  # a name that resolves to a refused address
        ("http://2130706433/", "loopback"),  # 127.0.0.1 in decimal
        ("http://0177.0.0.1/", "loopback"),  # octal
        ("http://0x7f.0.0.1/", "loopback"),  # hex
        ("http://0x7f000001/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://134744072/", "dotted decimal"),  # 8.8.8.8, public, but an ambiguous form
    ],
)
def test_refused_addresses_and_forms(url: str, reason: str) -> None:
    with pytest.raises(UrlNotAllowed) as refused:
        GUARD(url)
    assert refused.value.code == "url_not_allowed"
    assert reason in refused.value.details["reason"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:pw@8.8.8.8/", "credentials"),
        ("http://no-such-host.invalid/", "does not resolve"),
        ("http://8.8.8.8:99999/", "not a valid URL"),
    ],
)
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(UrlNotAllowed, match=reason):
        GUARD(url)


def test_public_addresses_pass() -> None:
    GUARD("http://8.8.8.8/hook")
    GUARD("https://[2001:4860:4860::8888]:8443/hook")


def test_https_only_refuses_http() -> None:
    strict = UrlGuard(load_settings(webhook_https_only=True))
    strict("https://8.8.8.8/")
    with pytest.raises(UrlNotAllowed, match="only https"):
        strict("http://8.8.8.8/")


def test_the_allowlist_lets_chosen_networks_through() -> None:
    allowing = UrlGuard(load_settings(webhook_allowed_cidrs="127.0.0.0/8,10.1.0.0/16"))
    allowing("http://127.0.0.1:8080/")
    allowing("http://10.1.2.3/")
    with pytest.raises(UrlNotAllowed, match="private"):
        allowing("http://10.2.0.1/")


def _claimed(url: str) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", endpoint_id="e", url=url,
        secrets=(new_signing_secret(),), body=b'{"type":"webhook.test"}', attempt=1,
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_delivery_checks_again_and_never_connects_to_a_refused_address(receiver: Receiver, host: str) -> None:
    """An endpoint registered while its address was allowed: at delivery the guard, now without the
    allowlist, refuses it (a literal IP, or a name through the pinned resolver) and the receiver
    sees nothing."""
    async with client_session(GUARD, max_connections=4) as http:
        result = await send(http, GUARD, _claimed(f"http://{host}:{receiver.port}/hook"), timeout=5, excerpt_bytes=1024)
    assert result.status_code is None and result.error is not None and "loopback" in result.error
    assert receiver.requests("hook") == []
    assert result.attempted_at <= utcnow()


async def test_an_allowed_receiver_gets_the_signed_delivery(receiver: Receiver) -> None:
    allowing = UrlGuard(load_settings(webhook_allowed_cidrs="127.0.0.1/32"))
    claimed = _claimed(receiver.url("hook"))
    receiver.expect_secrets("hook", *claimed.secrets)
    async with client_session(allowing, max_connections=4) as http:
        result = await send(http, allowing, claimed, timeout=5, excerpt_bytes=2)
    assert (result.status_code, result.response_excerpt, result.error) == (200, "ok", None)
    [got] = receiver.requests("hook")
    assert got.verified == {claimed.secrets[0]: (True, True)}
    assert got.webhook_id == claimed.delivery_id and got.body == claimed.body
