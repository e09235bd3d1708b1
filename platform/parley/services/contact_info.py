"""Contact-information protection (PARLEY_CONTACT_INFO)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from parley.config import Settings

if TYPE_CHECKING:
    from parley.services.messages import MessageDraft


def protect_contact_info(settings: Settings, draft: MessageDraft) -> MessageDraft:
    if settings.contact_info == "allow":
        return draft
    return draft
