"""The SSRF guard: which URLs and addresses Parley may call on a customer's behalf.

A webhook URL is someone else's input, and Parley's workers sit inside a network: without a
guard, a URL could make them call the cloud metadata service, a database's HTTP port or an
internal admin page. So every address a host resolves to (A and AAAA) must be a public unicast
address, at registration and again at every delivery; the sender then connects to exactly the
addresses checked here (webhooks.transport), so a DNS answer that changes between check and
connect (DNS rebinding) reaches nothing new.

Numeric host forms (2130706433, 0177.0.0.1, 0x7f.1) are resolved by getaddrinfo like any name,
so they are judged by the address they mean. PARLEY_WEBHOOK_ALLOWED_CIDRS lets chosen networks
through (tests on 127.0.0.1, receivers on premises).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from parley.config import Settings
from parley.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused by name, checked first so the error names the most specific range. Python's
# is_private and friends cover most; these are the ones they leave out or that
# tunnel to IPv4 addresses the guard would otherwise not see.
_NAMED_RANGES: tuple[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network], ...] = (
    ("carrier-grade NAT", ipaddress.ip_network("100.64.0.0/10")),
    ("unique local", ipaddress.ip_network("fc00::/7")),
    ("NAT64", ipaddress.ip_network("64:ff9b::/96")),
    ("6to4", ipaddress.ip_network("2002::/16")),
    ("Teredo", ipaddress.ip_network("2001::/32")),
)


class UrlNotAllowed(Invalid):
    code = "url_not_allowed"

    def __init__(self, reason: str, **details: object) -> None:
        super().__init__(f"url not allowed: {reason}", details={"reason": reason, **details})


def address_problem(address: IPAddress) -> str | None:
    """Why Parley must not connect to `address`, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "IPv4-mapped IPv6 address"
    for name, network in _NAMED_RANGES:
        if address.version == network.version and address in network:
            return f"{name} address"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),  # 169.254.0.0/16: the cloud metadata service
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
    )
    for name, refused in checks:
        if refused:
            return f"{name} address"
    if address.is_private:
        return "private address"
    if not address.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


class UrlGuard:
    def __init__(self, settings: Settings) -> None:
        self.https_only = settings.webhook_https_only
        self.allowed = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in settings.webhook_allowed_cidrs)

    def __call__(self, url: str) -> None:
        """Refuse (UrlNotAllowed) a URL Parley must not call. Resolves the host: blocking."""
        target = self.target(url)
        self.resolve(target.host, target.port)

    def target(self, url: str) -> Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise UrlNotAllowed("not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UrlNotAllowed("only http and https URLs", scheme=scheme)
        if self.https_only and scheme != "https":
            raise UrlNotAllowed("only https URLs (PARLEY_WEBHOOK_HTTPS_ONLY)", scheme=scheme)
        if not parts.hostname:
            raise UrlNotAllowed("the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise UrlNotAllowed("credentials in the URL are not supported")
        return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80))

    def resolve(self, host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
        """Every address `host` resolves to, all checked: one refused address refuses the host, so
        the connection can only ever reach checked addresses."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError):
            raise UrlNotAllowed("the host does not resolve", host=host) from None
        found: dict[str, socket.AddressFamily] = {}
        for family, _, _, _, sockaddr in infos:
            found.setdefault(str(sockaddr[0]).split("%", 1)[0], family)
        if not found:
            raise UrlNotAllowed("the host does not resolve", host=host)
        for text in found:
            self.check_address(ipaddress.ip_address(text), host)
        if _noncanonical_ipv4(host):
            # 2130706433, 0x7f.1, 0177.0.0.1: meaningful to getaddrinfo, refused by HTTP clients and
            # a classic way to slip past filters; ask for the dotted form.
            raise UrlNotAllowed("write IPv4 addresses in dotted decimal form", host=host, address=next(iter(found)))
        return [(family, text) for text, family in found.items()]

    def check_address(self, address: IPAddress, host: str) -> None:
        if any(address.version == net.version and address in net for net in self.allowed):
            return
        problem = address_problem(address)
        if problem is not None:
            raise UrlNotAllowed(f"{host} resolves to a {problem}", host=host, address=str(address))


def _noncanonical_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    try:
        return str(ipaddress.IPv4Address(host)) != host
    except ValueError:
        return True
