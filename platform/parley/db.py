"""Engines and sessions: async for the API, sync for workers and the CLI. One URL setting picks
the database; the code path is the same for both."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction, SessionTransactionOrigin, sessionmaker

from parley.config import Settings

log = logging.getLogger("parley.db")

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


# --- transactions -------------------------------------------------------------------------------
#
# Services are plain functions on a sync `Session`. Workers and the CLI call them directly; the API
# calls them through `AsyncSession.run_sync` (parley.api.service_calls), which runs the same code
# on the async driver through SQLAlchemy's greenlet bridge. A service opens its transaction with
# `transaction()` (writes) or `reading()` (reads); called inside another service's transaction, it
# joins that one instead, so an operation made of several operations commits once, or not at all.


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """A transaction that will write: commits on success, rolls back on any exception. Inside an
    open transaction it joins it (the outermost caller commits). The outermost caller must open it
    with this function, not by a read that autobegins: on SQLite that BEGIN takes no write lock."""
    if session.in_transaction():
        _refuse_implicit(session)
        yield session
        return
    with session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session


def _refuse_implicit(session: Session) -> None:
    """Joining a transaction that a bare read began (autobegin) would leave the write to whoever
    ends that transaction, which is usually nobody: closing the session rolls it back and the write
    is silently lost. Open the unit of work with transaction() or session.begin() instead."""
    current = session.get_transaction()
    if current is not None and current.origin is SessionTransactionOrigin.AUTOBEGIN:
        raise RuntimeError(
            "a write joined a transaction that a read began implicitly; open it with parley.db.transaction()"
        )


@contextmanager
def reading(session: Session) -> Iterator[Session]:
    """A read-only unit of work: the caller's transaction if one is open. Otherwise, on PostgreSQL,
    its statements run in autocommit, which saves the BEGIN and COMMIT round trips and loses
    nothing: under READ COMMITTED every statement takes its own snapshot, inside a transaction or
    not. SQLite keeps a transaction, whose WAL snapshot does span the statements (and costs no
    round trip)."""
    if session.in_transaction():
        yield session
        return
    with session.begin():
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options=_AUTOCOMMIT)
        yield session


@contextmanager
def one_statement(session: Session) -> Iterator[Session]:
    """A write of exactly one statement, atomic by itself: on PostgreSQL it runs in autocommit (one
    round trip instead of three); elsewhere, and inside an open transaction, it is transaction()."""
    if session.in_transaction() or session.get_bind().dialect.name != "postgresql":
        with transaction(session):
            yield session
        return
    with session.begin():
        session.connection(execution_options=_AUTOCOMMIT)
        yield session


_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


# --- the one "events committed" hook ---------------------------------------------------------------
#
# record_event marks the session; after its transaction commits, the session factory's hook runs
# once (the API: wake this process's realtime tail, tell the other processes and nudge the
# dispatcher; a worker: the same through Redis and the broker). A rolled-back transaction wakes
# nothing. The hook only raises flags: it must never block or fail the commit that triggered it.

EventsCommitted = Callable[[], None]
_EVENTS_RECORDED = "parley_events_recorded"
_ON_EVENTS_COMMITTED = "parley_on_events_committed"


def note_events_recorded(session: Session) -> None:
    session.info[_EVENTS_RECORDED] = True


def set_events_committed_hook(factory: sessionmaker[Session] | async_sessionmaker[AsyncSession], hook: EventsCommitted) -> None:
    """Sessions made by `factory` from now on call `hook` after each commit that recorded events."""
    info = dict(factory.kw.get("info") or {})
    info[_ON_EVENTS_COMMITTED] = hook
    factory.configure(info=info)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # SQLAlchemy also fires after_commit when a SAVEPOINT is released: nothing is visible yet, so
    # the mark waits for the outermost commit.
    if session.in_nested_transaction():
        return
    if session.info.pop(_EVENTS_RECORDED, False):
        hook = session.info.get(_ON_EVENTS_COMMITTED)
        if hook is not None:
            try:
                hook()
            except Exception:  # a wake-up is an optimisation; the poll and the sweep cover for it
                log.exception("outbox.wake_failed")


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended; if it committed, after_commit has already taken the mark.
    if transaction.parent is None:
        session.info.pop(_EVENTS_RECORDED, None)


# --- calling services from async code ----------------------------------------------------------------

P = ParamSpec("P")
T = TypeVar("T")


async def run_service(
    sessions: async_sessionmaker[AsyncSession],
    service: Callable[Concatenate[Session, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run a sync service function in a new session of the async engine: SQLAlchemy's greenlet
    bridge turns its statements into awaits on this event loop, so nothing blocks a thread. One
    bridge crossing per call, however many statements the service runs."""
    async with sessions() as session:
        return await session.run_sync(service, *args, **kwargs)
