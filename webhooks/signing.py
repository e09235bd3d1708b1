"""Standard Webhooks v1 signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
"<webhook-id>.<webhook-timestamp>.<body>" with the secret's bytes (base64 after `whsec_`),
sent as `v1,<base64>`; several secrets (during a rotation) give space-separated signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets)


def webhook_headers(secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, webhook_id, timestamp, body),
        "content-type": "application/json",
    }
