"""Fixtures shared by every suite. Each test that touches the database runs twice: on the embedded
SQLite configuration and on a PostgreSQL database private to this test run (created at start,
dropped at the end). Both are built by the real Alembic migrations."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings, load_settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.migrate import upgrade_to_head
from parley.models import Base
from tests.s3_server import S3Endpoint, start_s3_server

ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET_KEY = "test-secret-key-0123456789-0123456789"
POSTGRES_ADMIN_URL = os.environ.get("PARLEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = os.environ.get("PARLEY_TEST_BACKENDS", "sqlite,postgresql").split(",")


def create_postgres_database(prefix: str) -> str:
    """A new, empty PostgreSQL database named for this test run; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{POSTGRES_ADMIN_URL.rpartition('/')[0]}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rpartition("/")[2]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = create_postgres_database("parley_test")
    upgrade_to_head(load_settings(database_url=url))
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "parley.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(load_settings(database_url=url))
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    url = str(request.getfixturevalue("postgres_url" if backend == "postgresql" else "sqlite_url"))
    empty_all_tables(url)
    return url


def empty_all_tables(url: str) -> None:
    engine = create_sync_db_engine(load_settings(database_url=url))
    try:
        with engine.begin() as connection:
            tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    connection.execute(text(f"DELETE FROM {table}"))
    finally:
        engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # A broker file of the test's own: the API's outbox nudges land there, not in the work tree.
    return load_settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        database_pool_size=20,
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        storage_path=str(tmp_path / "storage"),  # uploads of the test's own, not under the work tree
        secret_key=SECRET_KEY,  # else webhook secrets would be keyed by a file written into ./var
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A real S3 endpoint over HTTP (moto's server mode) for the storage tests; each takes a bucket."""
    endpoint, server = start_s3_server()
    yield endpoint
    server.stop()


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions for calling services directly, as workers do (services are sync: parley.db)."""
    engine = create_sync_db_engine(settings)
    yield sync_session_factory(engine)
    engine.dispose()
