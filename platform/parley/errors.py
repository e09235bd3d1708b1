"""Domain errors. Each carries a stable `code` that clients and tests rely on; the API turns the
category into an HTTP status in one place (parley.api.errors)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class NotFound(DomainError):
    code = "not_found"


class Forbidden(DomainError):
    code = "forbidden"


class Conflict(DomainError):
    code = "conflict"


class Invalid(DomainError):
    """Well-formed input that breaks a business rule (too long, messaging yourself, ...)."""

    code = "validation_error"


class TooLarge(DomainError):
    """More bytes than a limit allows (an upload past PARLEY_MAX_UPLOAD_BYTES)."""

    code = "upload_too_large"


class UnsupportedMedia(DomainError):
    """Content of a type Parley refuses to store (executables, ...)."""

    code = "unsupported_media_type"


class NotReady(DomainError):
    """The thing exists but cannot be used yet, or any more (an attachment still processing, or failed)."""

    code = "not_ready"


class Unavailable(DomainError):
    """A dependency (storage, ...) is down: try again later."""

    code = "unavailable"
