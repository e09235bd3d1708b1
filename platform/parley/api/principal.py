"""Who is calling: a user (by their token) or the host product's admin (by PARLEY_ADMIN_TOKEN)."""

from __future__ import annotations

from dataclasses import dataclass

from parley.models import User


@dataclass(frozen=True)
class Principal:
    user: User | None = None
    is_admin: bool = False
