"""The API's listening sockets, bound before anything else starts: an address already in use then
stops `parley serve` and `parley up` at once, with one line naming it, instead of after the app
(database, realtime tail, broker) has started and must be torn down again."""

from __future__ import annotations

import contextlib
import errno
import socket


class AddressUnavailable(RuntimeError):
    """The address cannot be listened on; the message names it and why, in one line."""


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listeners(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound sockets for every address `host` stands for (as aiohttp would listen on), ready to be
    handed to web.run_app(sock=...)."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise AddressUnavailable(f"cannot listen on {_shown(host, port)}: {exc.strerror}") from None
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise AddressUnavailable(f"cannot listen on {_shown(host, port)}: {reason}") from None
    return listeners


def check_free(host: str, port: int) -> None:
    """Raise AddressUnavailable unless the address could be listened on now."""
    for listener in bind_listeners(host, port):
        with contextlib.suppress(OSError):
            listener.close()
