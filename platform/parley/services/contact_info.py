"""Contact-information protection (PARLEY_CONTACT_INFO): finding email addresses, phone numbers,
links to domains outside PARLEY_CONTACT_INFO_ALLOWED_DOMAINS and messenger handles in a message,
including the usual disguises ("john at gmail dot com", "(dot)", spaced or fullwidth digits,
zero-width characters between them), and masking or refusing them.

Detection reads a normalised copy of the text (NFKC, which folds fullwidth digits and letters;
zero-width characters dropped) that remembers where each of its characters came from, so masking
replaces exactly the original characters. Phone numbers are judged by `phonenumbers` (a number
must be valid for its country, read in PARLEY_CONTACT_INFO_REGION when it has no country code),
which keeps prices, dates, amounts and order numbers out.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import phonenumbers

from parley.config import Settings
from parley.errors import Invalid

if TYPE_CHECKING:
    from parley.services.messages import MessageDraft

MASK = "[contact info hidden]"
EMAIL, PHONE, LINK, MESSENGER = "email", "phone", "link", "messenger"
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)

_AT = r"(?:\s*@\s*|\s*[\(\[\{<]\s*at\s*[\)\]\}>]\s*|\s+at\s+)"
# A dot: written tight ("gmail.com"), spaced on both sides ("gmail . com") or spelt out.
_DOT = r"(?:\.|\s+\.\s+|\s*[\(\[\{<]\s*dot\s*[\)\]\}>]\s*|\s+dot\s+)"
_TLDS = (
    "com|net|org|io|co|me|info|biz|app|dev|xyz|us|uk|de|fr|ru|ly|gg|to|in|ai|ca|au|es|it|nl|br|mx|ch|se|no|pl|"
    "eu|tv|cc|site|online|store|shop|link|page|email|live|so|sh|im"
)
# Top-level domains in lower or upper case, not capitalised: "this.It is" is a sentence, not a host.
_TLDS = f"(?-i:{_TLDS}|{_TLDS.upper()})"
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b", re.IGNORECASE)
_DISGUISED_EMAIL = re.compile(
    rf"[a-z0-9][a-z0-9._%+-]*{_AT}[a-z0-9][a-z0-9-]*(?:{_DOT}[a-z0-9][a-z0-9-]*)*{_DOT}(?:{_TLDS})\b",
    re.IGNORECASE,
)
# Letters spaced out: "j o h n @ g m a i l . c o m".
_SPACED_EMAIL = re.compile(r"(?<!\S)(?:\w\s){2,}\w?\s*@\s*(?:\w\s?){2,}\.\s?(?:\w\s?)*\w", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
_DOMAIN = re.compile(
    rf"\b(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?{_DOT})+(?:{_TLDS})\b(?:/[^\s<>\"']*)?", re.IGNORECASE
)
_MESSENGERS = (
    r"whats\s*app|wa|telegram|tg|signal|skype|we\s*chat|viber|kik|snap(?:chat)?|insta(?:gram)?|ig|discord|line|"
    r"facebook|fb|messenger|threema|session"
)
_HANDLE = re.compile(
    rf"\b(?:{_MESSENGERS})\b(?P<mid>(?:[\s:=\-]|\b(?:me|id|handle|username|user|name|number|is|on|at)\b)*)"
    rf"(?P<handle>@?[a-z0-9_.:]*[a-z0-9_])",
    re.IGNORECASE,
)


def _is_handle(match: re.Match[str]) -> bool:
    handle = match.group("handle")
    if len(handle.lstrip("@")) < 3:
        return False
    return handle.startswith("@") or any(c in match.group("mid") for c in ":=-") or bool(re.search(r"[0-9_]", handle))


# Digits that may be a phone number written to slip past a filter: spaced, dotted, dashed.
_DIGIT_RUN = re.compile(r"\+?\(?\d(?:[\s.\-()/]{0,3}\d){6,16}")
# Words that make a number an order, invoice or other reference rather than a phone number.
_REFERENCE_WORDS = re.compile(
    r"(?:#|\b(?:order|invoice|ref|reference|tracking|ticket|id|no|sku|case|account|acct|iban|zip)\b[\s.:#-]*)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int  # in the original text
    end: int
    text: str


class _Normalised:
    """The text as detection reads it, and where each character came from."""

    def __init__(self, original: str) -> None:
        chars: list[str] = []
        origin: list[int] = []
        for index, char in enumerate(original):
            if ord(char) in _ZERO_WIDTH:
                continue
            for folded in unicodedata.normalize("NFKC", char):
                chars.append(folded)
                origin.append(index)
        self.text = "".join(chars)
        self.origin = origin

    def span(self, start: int, end: int) -> tuple[int, int]:
        return self.origin[start], self.origin[end - 1] + 1


def find_contact_info(text: str, *, region: str = "US", allowed_domains: tuple[str, ...] | list[str] = ()) -> list[Finding]:
    """Every piece of contact information in `text`, in order, overlaps merged (the first kind
    found for a span wins: email before link before messenger before phone)."""
    norm = _Normalised(text)
    found: list[tuple[str, int, int]] = []
    for pattern in (_EMAIL, _DISGUISED_EMAIL, _SPACED_EMAIL):
        for match in pattern.finditer(norm.text):
            found.append((EMAIL, match.start(), match.end()))
    for pattern in (_URL, _DOMAIN):
        for match in pattern.finditer(norm.text):
            if not _is_allowed(match.group(0), allowed_domains):
                found.append((LINK, match.start(), match.end()))
    for match in _HANDLE.finditer(norm.text):
        if _is_handle(match):
            found.append((MESSENGER, match.start(), match.end()))
    found.extend((PHONE, start, end) for start, end in _phones(norm.text, region))
    return _merge(text, norm, found)


def _is_allowed(found: str, allowed_domains: tuple[str, ...] | list[str]) -> bool:
    host = re.sub(r"^(?:https?://)?", "", found, flags=re.IGNORECASE)
    host = re.split(r"[/?#:]", host, maxsplit=1)[0]
    host = re.sub(r"\s*[\(\[\{<]\s*dot\s*[\)\]\}>]\s*|\s+dot\s+|\s*\.\s*", ".", host, flags=re.IGNORECASE).lower().strip(".")
    host = host.removeprefix("www.")
    return any(host == domain or host.endswith("." + domain) for domain in allowed_domains)


def _phones(text: str, region: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        if not _REFERENCE_WORDS.search(text[: match.start]):
            spans.append((match.start, match.end))
    for match in _DIGIT_RUN.finditer(text):
        if any(s <= match.start() < e for s, e in spans) or _REFERENCE_WORDS.search(text[: match.start()]):
            continue
        raw = match.group(0)
        digits = re.sub(r"\D", "", raw)
        if not 7 <= len(digits) <= 15:
            continue
        candidate = ("+" + digits) if raw.startswith("+") else digits
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            spans.append((match.start(), match.end()))
    return spans


def _merge(original: str, norm: _Normalised, found: list[tuple[str, int, int]]) -> list[Finding]:
    found.sort(key=lambda f: (f[1], -(f[2] - f[1])))
    merged: list[tuple[str, int, int]] = []
    for kind, start, end in found:
        if merged and start < merged[-1][2]:
            last = merged[-1]
            merged[-1] = (last[0], last[1], max(last[2], end))
        else:
            merged.append((kind, start, end))
    findings = []
    for kind, start, end in merged:
        o_start, o_end = norm.span(start, end)
        findings.append(Finding(kind, o_start, o_end, original[o_start:o_end]))
    return findings


def mask(text: str, findings: list[Finding]) -> str:
    out, position = [], 0
    for finding in findings:
        out.append(text[position:finding.start])
        out.append(MASK)
        position = finding.end
    out.append(text[position:])
    return "".join(out)


def contact_info_not_allowed(kinds: list[str]) -> Invalid:
    return Invalid(
        f"messages may not contain contact information ({', '.join(kinds)})",
        code="contact_info_not_allowed",
        details={"kinds": kinds},
    )


def protect_contact_info(settings: Settings, draft: MessageDraft) -> MessageDraft:
    """The draft as it may be stored: unchanged (allow, or nothing found), masked with the
    original kept (mask), or refused with 422 contact_info_not_allowed naming the kinds (block)."""
    if settings.contact_info == "allow":
        return draft
    findings = find_contact_info(
        draft.content, region=settings.contact_info_region, allowed_domains=settings.contact_info_allowed_domains
    )
    if not findings:
        return draft
    if settings.contact_info == "block":
        raise contact_info_not_allowed(sorted({f.kind for f in findings}))
    return dataclasses.replace(draft, content=mask(draft.content, findings), original_content=draft.content)
