"""Raw RFC 5322 replies as Gmail, Outlook and Apple Mail write them."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def gmail(sender: str, to: str, text: str, message_id: str = "<CAgmail1@mail.gmail.com>",
          attachment: bytes | None = None) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = f"Bob <{sender}>"
    message["To"] = to
    message["Subject"] = "Re: Conversation with Alice"
    message["Message-ID"] = message_id
    message["In-Reply-To"] = "<x.notification@parley.test>"
    body = (f"{text}\n\nOn Mon, 1 Dec 2026 at 10:00, Parley <notifications@parley.test> wrote:\n"
            "> Hi Bob,\n>\n> You have a new message from Alice:\n> are we still on?\n")
    message.set_content(body)
    message.add_alternative(f"<div dir=\"ltr\">{text}</div><br><div class=\"gmail_quote\">On Mon ... wrote:"
                            "<blockquote>are we still on?</blockquote></div>", subtype="html")
    if attachment is not None:
        message.add_attachment(attachment, maintype="image", subtype="png", filename="photo.png")
    return message.as_bytes()


def outlook(sender: str, to: str, text: str, message_id: str = "<DB9PR01MB1@outlook.com>") -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = f"Bob <{sender}>"
    message["To"] = to
    message["Subject"] = "RE: Conversation with Alice"
    message["Message-ID"] = message_id
    message.set_content(
        f"{text}\n\nBest regards,\nBob\n\n________________________________\n"
        "From: Parley <notifications@parley.test>\nSent: Monday, December 1, 2026 10:00 AM\n"
        "To: Bob <bob@example.com>\nSubject: Conversation with Alice\n\nHi Bob,\nare we still on?\n"
    )
    return message.as_bytes()


def apple_mail_html_only(sender: str, to: str, text: str, message_id: str = "<A1B2@icloud.com>") -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = f"Bob <{sender}>"
    message["To"] = to
    message["Subject"] = "Re: Conversation with Alice"
    message["Message-ID"] = message_id
    message.set_content(
        f"<html><body><div>{text}</div><div><br></div><div>Sent from my iPhone</div>"
        "<div><br><blockquote type=\"cite\">On 1 Dec 2026, at 10:00, Parley wrote:<br>are we still on?"
        "</blockquote></div></body></html>",
        subtype="html",
    )
    return message.as_bytes()


def out_of_office(sender: str, to: str) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Automatic reply: Conversation with Alice"
    message["Auto-Submitted"] = "auto-replied"
    message["Message-ID"] = "<ooo1@example.com>"
    message.set_content("I am out of the office until Monday.")
    return message.as_bytes()


def bounce(to: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@example.com>\r\n"
        f"To: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce1@example.com>\r\n"
        "Return-Path: <>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nThis is the mail system.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.com\r\n\r\n"
        "Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b--\r\n"
    ).encode()
