"""Rendering an email from its kind's templates (templates/<kind>/subject.txt, body.txt, body.html:
Jinja2, the HTML autoescaped and its CSS inlined with css-inline) into a multipart/alternative
RFC 5322 message with Parley's headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from parley.models import utcnow

TEMPLATES = Path(__file__).parent / "templates"

# On every email Parley sends: auto-responders (out-of-office, vacation) must not answer it, so no
# mail loop can start (RFC 3834; Exchange's own header).
AUTOMATIC_HEADERS = {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(kind: str, context: dict[str, Any]) -> Rendered:
    env = _environment()
    subject = " ".join(env.get_template(f"{kind}/subject.txt").render(context).split())
    text = env.get_template(f"{kind}/body.txt").render(context)
    html = _inliner().inline(env.get_template(f"{kind}/body.html").render(context))
    return Rendered(subject, text, html)


def address_domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "parley.localhost"


@dataclass
class Outgoing:
    recipient_name: str
    recipient_address: str
    rendered: Rendered
    message_id: str  # without angle brackets
    from_address: str
    headers: dict[str, str] = field(default_factory=dict)


def build_message(outgoing: Outgoing) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = outgoing.from_address
    message["To"] = formataddr((outgoing.recipient_name, outgoing.recipient_address))
    message["Subject"] = outgoing.rendered.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = f"<{outgoing.message_id}>"
    for name, value in {**AUTOMATIC_HEADERS, **outgoing.headers}.items():
        message[name] = value
    message.set_content(outgoing.rendered.text, cte="quoted-printable")
    message.add_alternative(outgoing.rendered.html, subtype="html", cte="quoted-printable")
    return message.as_bytes()


def envelope_address(from_header: str) -> str:
    return parseaddr(from_header)[1]


__all__ = ["Address", "Outgoing", "Rendered", "build_message", "render"]
