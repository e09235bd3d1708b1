"""The EmailSender interface and its two implementations: SMTP (PARLEY_SMTP_URL) and a folder of
.eml files (the embedded default, var/mail/).

A sender hands over one rendered message. It raises TemporaryFailure for what is worth retrying (no
connection, a timeout, a 4xx answer) and PermanentFailure for a 5xx answer; the send task turns
those into a retry with backoff or a failed email.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from parley.config import Settings

SMTP_TIMEOUT_SECONDS = 30.0


class SendFailure(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporaryFailure(SendFailure):
    """Connection trouble or a 4xx answer: try again later."""


class PermanentFailure(SendFailure):
    """A 5xx answer: the server will never take this email."""


class EmailSender(Protocol):
    def send(self, envelope_from: str, recipient: str, content: bytes) -> None: ...


Outcome = SendFailure | None


def send_all(sender: EmailSender, envelope_from: str, emails: list[tuple[str, bytes]]) -> list[Outcome]:
    """Several emails (recipient, content), each one's outcome (None: sent) in order. Over SMTP they
    share one connection (a digest run sends thousands); otherwise one send each."""
    many = getattr(sender, "send_many", None)
    if many is not None:
        return list(many(envelope_from, emails))
    outcomes: list[Outcome] = []
    for recipient, content in emails:
        try:
            sender.send(envelope_from, recipient, content)
            outcomes.append(None)
        except SendFailure as exc:
            outcomes.append(exc)
    return outcomes


class FolderSender:
    """Writes each email as <folder>/<Message-ID>.eml (atomically: a reader never sees half of one;
    the same email sent twice is the same file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(self, envelope_from: str, recipient: str, content: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        match = re.search(rb"^Message-ID:\s*<([^>]+)>", content, re.MULTILINE | re.IGNORECASE)
        stem = match.group(1).decode("ascii", "replace") if match else os.urandom(8).hex()
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:200]
        descriptor, draft = tempfile.mkstemp(dir=self.folder, prefix=".draft-")
        with os.fdopen(descriptor, "wb") as draft_file:
            draft_file.write(content)
        os.replace(draft, self.folder / f"{stem}.eml")


class SmtpSender:
    """smtp:// (plain, STARTTLS if the server offers it is NOT assumed), smtp+starttls:// (STARTTLS
    required) or smtps:// (TLS from the start), with optional user:password@. One connection per
    send: simple, and a dead connection never outlives one email."""

    def __init__(self, url: str, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtp+starttls", "smtps"):
            raise ValueError("PARLEY_SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[parts.scheme]
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout

    def _connect(self) -> smtplib.SMTP:
        if self.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.scheme == "smtp+starttls":
                client.starttls(context=ssl.create_default_context())
            if self.username is not None:
                client.login(self.username, self.password or "")
        except BaseException:
            client.close()
            raise
        return client

    def send(self, envelope_from: str, recipient: str, content: bytes) -> None:
        try:
            with self._connect() as client:
                client.sendmail(envelope_from, [recipient], content)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _by_code(code, reply) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, auth, ...
            raise _by_code(exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, OSError) as exc:  # connection refused, reset, timeout, TLS
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from None


    def send_many(self, envelope_from: str, emails: list[tuple[str, bytes]]) -> list[Outcome]:
        """One connection for all of them (RSET between, as smtplib does after a refusal); a broken
        connection is opened again once per email before that email counts as a temporary failure."""
        outcomes: list[Outcome] = []
        client: smtplib.SMTP | None = None
        try:
            for recipient, content in emails:
                outcome: Outcome = None
                for attempt in range(2):
                    try:
                        if client is None:
                            client = self._connect()
                        client.sendmail(envelope_from, [recipient], content)
                        outcome = None
                        break
                    except smtplib.SMTPRecipientsRefused as exc:
                        code, reply = next(iter(exc.recipients.values()))
                        outcome = _by_code(code, reply)
                        break
                    except smtplib.SMTPResponseException as exc:
                        outcome = _by_code(exc.smtp_code, exc.smtp_error)
                        break
                    except (smtplib.SMTPException, OSError) as exc:
                        outcome = TemporaryFailure(f"{type(exc).__name__}: {exc}")
                        if client is not None:
                            client.close()
                        client = None
                outcomes.append(outcome)
        finally:
            if client is not None:
                try:
                    client.quit()
                except (smtplib.SMTPException, OSError):
                    client.close()
        return outcomes


def _by_code(code: int, reply: bytes | str) -> SendFailure:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    message = f"{code} {text}"[:400]
    return PermanentFailure(message, code) if 500 <= code < 600 else TemporaryFailure(message, code)


def sender_for(settings: Settings) -> EmailSender:
    if settings.smtp_url:
        return SmtpSender(settings.smtp_url)
    return FolderSender(Path(settings.email_folder))
