"""Running Alembic from code: `parley migrate`, `parley up` and the tests use these."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

# Alembic announces each of its plugins at INFO when it is imported: nothing to show at each start.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402 (after quieting its plugin announcements)
from alembic.config import Config  # noqa: E402
from sqlalchemy.exc import SAWarning  # noqa: E402

from parley.config import Settings  # noqa: E402

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    return config


def upgrade_to_head(settings: Settings) -> None:
    with warnings.catch_warnings():
        # SQLite: rebuilding a table in batch mode (0004, attachments) reflects the users table it
        # refers to, whose lower(username) index SQLAlchemy cannot reflect. That index is not
        # touched (tests/api/test_users.py proves it on both databases): the warning says nothing.
        warnings.filterwarnings(
            "ignore", message="Skipped unsupported reflection of expression-based index", category=SAWarning
        )
        command.upgrade(alembic_config(settings), "head")
