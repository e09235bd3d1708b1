"""The answer to a request aiohttp's parser refuses (a control character in a header, a header line
over the limit, a broken request line): Parley's JSON error with a stable code, instead of
aiohttp's plain text, which quotes the offending bytes (a bearer token among them) back.

aiohttp answers these before any middleware runs, from `RequestHandler.handle_error`, which has no
public hook; this wraps that method once per process. Anything else (a 500) keeps aiohttp's own
handling.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

BAD_REQUEST_BODY = json.dumps(
    {"error": {"code": "bad_request", "message": "the request is not valid HTTP (a malformed or over-long line)", "details": {}}}
)
_INSTALLED = "_parley_json_bad_requests"


def install_json_bad_requests() -> None:
    if getattr(RequestHandler, _INSTALLED, False):
        return
    original = RequestHandler.handle_error

    def handle_error(
        self: RequestHandler, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        response = original(self, request, status, exc, message)  # logs (redacted) and checks the writer
        if status != 400:
            return response
        answer = web.Response(status=400, text=BAD_REQUEST_BODY, content_type="application/json")
        answer.force_close()
        return answer

    RequestHandler.handle_error = handle_error  # type: ignore[method-assign]
    setattr(RequestHandler, _INSTALLED, True)
