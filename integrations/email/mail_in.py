"""`parley mail-in`: an SMTP (or, with --lmtp, LMTP) server for a relay such as Postfix to hand
replies to. A recipient that is not a live reply address is refused at RCPT with 550; a message
over PARLEY_EMAIL_MAX_INBOUND_BYTES with 552 (aiosmtpd's data size limit). An accepted message goes
through integrations.email.inbound.receive, the same pipeline as POST /api/v1/inbound/email; mail
dropped on purpose (auto-replies, bounces, a forged From) is still answered 250, so the relay sends
no bounce back into a loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from integrations.email.inbound import Run, receive, reply_token_of
from parley.config import Settings
from parley.services.email_replies import find_reply_target
from parley.services.storage import Storage

log = logging.getLogger("parley.email")


class MailInHandler:
    def __init__(self, settings: Settings, storage: Storage, run: Run) -> None:
        self.settings = settings
        self.storage = storage
        self.run = run

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        token = reply_token_of(address, self.settings)
        target = await asyncio.to_thread(self.run, find_reply_target, token) if token else None
        if target is None:
            log.info("email.inbound_refused", extra={"reason": "unknown_recipient", "recipient": address[:200]})
            return "550 5.1.1 No such reply address"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            await asyncio.to_thread(
                receive, raw, settings=self.settings, storage=self.storage, run=self.run,
                envelope_recipients=list(envelope.rcpt_tos),
            )
        except Exception:
            log.exception("email.inbound_failed")
            return "451 4.3.0 Temporary failure, try again later"
        return "250 OK"


def server_factory(settings: Settings, storage: Storage, run: Run, *, lmtp: bool) -> Any:
    handler = MailInHandler(settings, storage, run)
    protocol = LMTP if lmtp else SMTP

    def factory() -> SMTP:
        return protocol(handler, data_size_limit=settings.email_max_inbound_bytes, enable_SMTPUTF8=True,
                        hostname="parley-mail-in")

    return factory


async def serve(settings: Settings, storage: Storage, run: Run, host: str, port: int, *, lmtp: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(server_factory(settings, storage, run, lmtp=lmtp), host, port)
    log.info("email.mail_in_listening", extra={"host": host, "port": port, "lmtp": lmtp})
    async with server:
        await server.serve_forever()
