"""Structured logs: one JSON object a line, an event name plus its fields; and the redaction that
keeps tokens, tickets and secrets out of every line, whoever wrote it."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text  # already formatted (and redacted) by RedactSecrets
        return json.dumps(entry, default=str)


# A bearer credential, a query-string ticket, or anything carrying Parley's secret prefixes (API
# tokens plt_, WebSocket tickets wst_, webhook signing secrets whsec_).
_SECRET = re.compile(
    r"(?P<keep>(?i:bearer)\s+|(?i:ticket)=)[^\s&'\"\\]+"
    r"|(?P<prefix>plt_|wst_|whsec_)[A-Za-z0-9_\-+/=]+"
)
REDACTED = "[redacted]"
# aiohttp's loggers quote request bytes (the parser's errors, the access log's request line).
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.websocket", "aiohttp.internal")


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group("keep") or m.group("prefix")) + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record before any handler sees it.

    aiohttp answers a malformed request (a control character in a header, a header line past its
    limit) itself, before Parley's middlewares run, and logs the parser's exception at ERROR: its
    message quotes the offending raw line, Authorization header and all. Such a record becomes a
    plain `http.bad_request` warning with no exception text at all, since a parser error may quote
    any part of the request. Every other record has secret-looking text masked in its message and
    its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "http.bad_request", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.status, record.error = exc.code, type(exc).__name__
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed format: leave it to the handler to complain
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_info, record.exc_text = None, redact(text)
        return True


def install_log_redaction() -> None:
    """Put the redaction on aiohttp's loggers themselves, so it applies whatever handlers are
    configured (ours, a test's, a host's); idempotent."""
    for name in AIOHTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())  # every logger's records, Parley's and libraries' alike
    install_log_redaction()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
