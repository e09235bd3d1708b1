"""Engines and sessions: async for the API, sync for workers and the CLI. One URL setting picks
the database; the code path is the same for both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_BUSY_TIMEOUT_SECONDS = SQLITE_BUSY_TIMEOUT_MS / 1000
# Execution option marking a transaction that will write (SQLite then takes its write lock at BEGIN).
WRITE_OPTION = "parley_writes"


def _driver_url(url: str, *, async_: bool) -> str:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() == "sqlite":
        driver = "aiosqlite" if async_ else "pysqlite"
    else:
        driver = "psycopg"  # psycopg 3 serves both; SQLAlchemy picks its async flavour itself
    return parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}").render_as_string(hide_password=False)


def prepare_sqlite_file(url: str) -> None:
    """Create the folder a SQLite file lives in (./var on a fresh checkout)."""
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def apply_sqlite_pragmas(engine: Engine) -> None:
    """WAL lets readers run beside the writer; busy_timeout makes a second writer wait its turn
    instead of failing; synchronous=NORMAL is durable across application crashes in WAL mode."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "PRAGMA foreign_keys=ON",
            "PRAGMA synchronous=NORMAL",
        ):
            cursor.execute(pragma)
        cursor.close()


def _begin_writes_immediately(engine: Engine) -> None:
    """BEGIN IMMEDIATE takes the write lock up front for transactions that will write, because a
    deferred transaction that reads and then writes fails at once with "database is locked"
    however long the busy timeout."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _configure_sqlite(engine: Engine) -> None:
    apply_sqlite_pragmas(engine)
    _begin_writes_immediately(engine)


def create_async_db_engine(settings: Settings) -> AsyncEngine:
    url = _driver_url(settings.database_url, async_=True)
    if settings.is_sqlite:
        prepare_sqlite_file(url)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        _configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
    )


def create_sync_db_engine(settings: Settings) -> Engine:
    url = _driver_url(settings.database_url, async_=False)
    if settings.is_sqlite:
        prepare_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=settings.database_pool_size, pool_pre_ping=True)


def async_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def sync_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def write_transaction(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """One transaction that will write: commits on success, rolls back on any exception."""
    async with session.begin():
        await session.connection(execution_options={WRITE_OPTION: True})
        yield session


@contextmanager
def sync_write_transaction(session: Session) -> Iterator[Session]:
    with session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session
