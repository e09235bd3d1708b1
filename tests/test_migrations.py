"""The Alembic migrations build exactly the schema the models describe (an `alembic check`)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from parley.config import load_settings
from parley.db import create_sync_db_engine
from parley.models import Base


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_sync_db_engine(load_settings(database_url=database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
