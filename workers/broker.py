"""Celery's broker settings, from PARLEY_BROKER_URL."""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES

from parley.config import Settings

EMBEDDED_PREFIX = "sqla+sqlite:"
EMBEDDED_TRANSPORT = "workers.embedded_broker:Transport"
# The embedded broker is polled; a quarter second keeps a nudge's delay small at almost no cost.
EMBEDDED_POLLING_SECONDS = 0.25
REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://")
# Plain redis:// gets the repaired transport; rediss:// keeps kombu's (its TLS defaults hang on
# the scheme name) until the upstream fix lands.
REPAIRED_REDIS_TRANSPORT = "workers.redis_broker:Transport"
REDIS_SOCKET_TIMEOUT = 15.0  # a publish to a broker that vanished without closing the connection fails
REDIS_CONNECT_TIMEOUT = 3.0


# kombu has no "sqlite" transport of its own. Registering it (rather than passing the class as
# broker_transport) makes sqlite:// a broker URL every part of Celery understands, `celery report`
# and `celery inspect` included, in any process that imports the Celery app.
TRANSPORT_ALIASES.setdefault("sqlite", EMBEDDED_TRANSPORT)


def is_embedded(settings: Settings) -> bool:
    return settings.broker_url.startswith(EMBEDDED_PREFIX)


def broker_config(settings: Settings) -> dict[str, Any]:
    url = settings.broker_url
    if is_embedded(settings):
        # People write kombu's documented sqla+sqlite: form; kombu gets sqlite:, which the alias
        # registered above points at the tuned transport.
        return {
            "broker_url": url.removeprefix("sqla+"),
            "broker_transport_options": {"polling_interval": EMBEDDED_POLLING_SECONDS},
        }
    if url.startswith(REDIS_SCHEMES):
        visibility = settings.broker_visibility_timeout
        return {
            "broker_url": url,
            "broker_transport": REPAIRED_REDIS_TRANSPORT if url.startswith("redis://") else None,
            "broker_transport_options": {
                "visibility_timeout": visibility,
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
                # Workers look for abandoned tasks (taken, never acknowledged) every interval x throttle
                # seconds: kombu's 100 s by default, more often with a short visibility timeout so the
                # sweep happens several times per timeout.
                "unacked_restore_interval": max(1, min(10, visibility // 20)),
                "unacked_restore_throttle": 10 if visibility >= 2000 else 1,
            },
        }
    return {"broker_url": url}
