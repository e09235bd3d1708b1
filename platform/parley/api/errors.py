"""Every failure leaves the API as `{"error": {"code", "message", "details"}}`. Domain errors map
to their status here and only here; anything unexpected is logged and answered with a 500 that
reveals nothing."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from parley.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    NotReady,
    TooLarge,
    Unavailable,
    UnsupportedMedia,
)

log = logging.getLogger("parley.api")

_STATUS_OF: list[tuple[type[DomainError], int]] = [
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (Invalid, 422),
    (NotReady, 409),
    (TooLarge, 413),
    (UnsupportedMedia, 415),
    (Unavailable, 503),
]

_CODE_OF_HTTP_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(web.HTTPException):
    """An HTTP-level failure with a stable code (bad JSON, missing auth...)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        self.status_code = status
        super().__init__()
        self.code = code
        self.error_message = message
        self.details = details or {}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "details": details or {}}}, status=status
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status_code, exc.code, exc.error_message, exc.details)
    except DomainError as exc:
        status = next((s for cls, s in _STATUS_OF if isinstance(exc, cls)), 400)
        return error_response(status, exc.code, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        code = _CODE_OF_HTTP_STATUS.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, exc.reason)
        if exc.status_code == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
        return response
    except Exception:
        log.exception("request.failed method=%s path=%s", request.method, request.path)
        return error_response(500, "internal_error", "something went wrong on our side")
