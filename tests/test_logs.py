"""The production log configuration (`configure_logging`): one JSON object a line, and no token,
ticket or secret in any of them, whichever logger wrote it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from parley.logs import configure_logging

TOKEN = "plt_Q2hlY2tpbmcgdGhhdCB0aGlzIG5ldmVyIGxlYWtz"
TICKET = "wst_dGlja2V0IHRoYXQgbXVzdCBub3QgbGVhaw"
SECRET = "whsec_c2VjcmV0IHRoYXQgbXVzdCBub3QgbGVhaw=="


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG")
    yield stream
    root.handlers[:], root.level = saved


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_malformed_request_is_one_warning_without_the_raw_bytes(output: io.StringIO) -> None:
    server = logging.getLogger("aiohttp.server")
    for exc in (
        BadHttpMessage(f"Invalid header value char:\n  b'Authorization: Bearer {TOKEN}\\x01'"),
        LineTooLong(f"Bearer {TOKEN}" + "x" * 100, "8190"),
    ):
        try:
            raise exc
        except BadHttpMessage as raised:
            server.exception("Error handling request from %s", "127.0.0.1", exc_info=raised)
    lines = _lines(output)
    assert [(line["level"], line["event"], line["error"]) for line in lines] == [
        ("warning", "http.bad_request", "BadHttpMessage"),
        ("warning", "http.bad_request", "LineTooLong"),
    ]
    assert TOKEN not in output.getvalue() and TOKEN[4:20] not in output.getvalue()


def test_tokens_tickets_and_secrets_are_masked_in_messages_and_tracebacks(output: io.StringIO) -> None:
    logging.getLogger("aiohttp.access").info('"GET /api/v1/ws?ticket=%s&since=3 HTTP/1.1" 101', TICKET)
    logging.getLogger("parley.api").warning("upstream said: Authorization: Bearer %s", TOKEN)
    try:
        raise ValueError(f"could not sign with {SECRET}")
    except ValueError:
        logging.getLogger("parley.webhooks").exception("webhooks.sign_failed")
    text = output.getvalue()
    for secret in (TOKEN, TICKET, SECRET):
        assert secret not in text and secret[6:] not in text
    lines = _lines(output)
    assert [line["event"] for line in lines] == [
        '"GET /api/v1/ws?ticket=[redacted]&since=3 HTTP/1.1" 101',
        "upstream said: Authorization: Bearer [redacted]",
        "webhooks.sign_failed",
    ]
    assert "ValueError: could not sign with whsec_[redacted]" in str(lines[2]["exception"])
