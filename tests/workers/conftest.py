"""Fixtures for the worker tests: the test consumers' effects table, private Redis servers, private
databases for worker processes, and real worker, beat and `parley up` processes that are always
stopped, with everything they started, when the test ends."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings, load_settings
from parley.db import create_sync_db_engine, sync_session_factory
from parley.migrate import upgrade_to_head
from parley.models import Base, User
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.messages import MessageDraft, send_message
from parley.services.users import NewUser, create_user
from tests.conftest import ADMIN_TOKEN, create_postgres_database, drop_postgres_database
from tests.workers.consumers import CONTROL_DIR_ENV, create_effects_table, drop_effects_table

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_CONSUMERS = "tests.workers.consumers"
STOP_TIMEOUT = 10.0
POLL_SECONDS = 0.05


def wait_until(
    check: Callable[[], object], *, timeout: float, what: str, log: Callable[[], str] | None = None
) -> object:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            details = f"\n--- process output ---\n{log()[-6000:]}" if log is not None else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}{details}")
        time.sleep(POLL_SECONDS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the test consumers' effects ---------------------------------------------------------------


@pytest.fixture
def effects_engine(database_url: str) -> Iterator[Engine]:
    """The effects table in the shared test database, dropped again afterwards (the migrations test
    compares that database with the models)."""
    engine = create_sync_db_engine(load_settings(database_url=database_url))
    create_effects_table(engine)
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM test_consumer_effects"))
        yield engine
    finally:
        drop_effects_table(engine)
        engine.dispose()


# --- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server of this test run's own, on a free port; stop() and start() make an outage."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: _answers(client), timeout=10, what=f"redis-server on port {self.port}")
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    shared_redis.flush()
    return shared_redis.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


# --- databases for worker processes ------------------------------------------------------------


def _migrated_with_effects_table(url: str) -> str:
    settings = load_settings(database_url=url)
    upgrade_to_head(settings)
    engine = create_sync_db_engine(settings)
    create_effects_table(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def worker_postgres_url() -> Iterator[str]:
    """A PostgreSQL database for tests that run worker processes: theirs alone, so nothing they
    leave running can touch another test's data."""
    url = _migrated_with_effects_table(create_postgres_database("parley_workers"))
    yield url
    drop_postgres_database(url)


def _empty(engine: Engine) -> None:
    tables = ["test_consumer_effects", *(t.name for t in reversed(Base.metadata.sorted_tables))]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))


@dataclass
class WorkerSetup:
    """Where a test's worker processes and the test itself meet: one database, one broker, one
    control directory for the test consumers."""

    database_url: str
    broker_url: str
    directory: Path
    engine: Engine

    @property
    def control_dir(self) -> Path:
        return self.directory / "control"

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": self.database_url,
            "broker_url": self.broker_url,
            "admin_token": ADMIN_TOKEN,
            "extra_consumers": [TEST_CONSUMERS],
            "outbox_sweep_seconds": 1.0,
        }
        return load_settings(**{**values, **overrides})

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of a child process: this setup's settings, none of the caller's PARLEY_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            PARLEY_DATABASE_URL=self.database_url,
            PARLEY_BROKER_URL=self.broker_url,
            PARLEY_ADMIN_TOKEN=ADMIN_TOKEN,
            PARLEY_EXTRA_CONSUMERS=TEST_CONSUMERS,
            PARLEY_OUTBOX_SWEEP_SECONDS="1",
            PARLEY_LOG_LEVEL="INFO",
            PYTHONPATH=str(REPO_ROOT),
            PYTHONUNBUFFERED="1",
        )
        env[CONTROL_DIR_ENV] = str(self.control_dir)
        env.update(overrides)
        return env

    def attempts(self) -> list[tuple[str, int, int]]:
        """(consumer, event id, pid) of every attempt the test consumers made, in order."""
        path = self.control_dir / "attempts"
        if not path.exists():
            return []
        return [(c, int(e), int(p)) for c, e, p in (line.split() for line in path.read_text().splitlines())]


def _setup(database_url: str, broker_url: str, directory: Path) -> Iterator[WorkerSetup]:
    engine = create_sync_db_engine(load_settings(database_url=database_url))
    _empty(engine)
    setup = WorkerSetup(database_url, broker_url, directory, engine)
    setup.control_dir.mkdir()
    yield setup
    engine.dispose()


@pytest.fixture
def postgres_redis(worker_postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[WorkerSetup]:
    """The full-stack configuration: PostgreSQL and Redis."""
    yield from _setup(worker_postgres_url, redis_url, tmp_path)


@pytest.fixture
def sqlite_embedded(tmp_path: Path) -> Iterator[WorkerSetup]:
    """The embedded configuration: a SQLite database and the SQLite broker, both in tmp_path."""
    url = _migrated_with_effects_table(f"sqlite:///{tmp_path / 'var' / 'parley.db'}")
    yield from _setup(url, f"sqla+sqlite:///{tmp_path / 'var' / 'broker.db'}", tmp_path)


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started (its process group), and reap it."""
        if self.group_alive():
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=STOP_TIMEOUT)
        wait_until(lambda: not self.group_alive(), timeout=STOP_TIMEOUT, what=f"{self.name}'s processes to exit")

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL whatever is left of its group."""
        if self.popen.poll() is None:
            self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=STOP_TIMEOUT)
        self.kill_group()


class Processes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Process:
        log_path = self.directory / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv, env=env, cwd=cwd or self.directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Process(name, popen, log_path)
        self.started.append(process)
        return process

    def worker(self, setup: WorkerSetup, env: dict[str, str] | None = None, concurrency: int = 2) -> Process:
        argv = [sys.executable, "-m", "parley.cli", "worker", "--concurrency", str(concurrency),
                "--hostname", f"test-{len(self.started)}-{secrets.token_hex(3)}@%h"]
        return self.start("worker", argv, setup.env(**(env or {})))

    def beat(self, setup: WorkerSetup) -> Process:
        return self.start("beat", [sys.executable, "-m", "parley.cli", "beat"], setup.env())

    def output(self) -> str:
        return "\n".join(f"=== {p.name} ({p.pid})\n{p.output()}" for p in self.started)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def wait_for_worker(process: Process, timeout: float = 30) -> None:
    wait_until(lambda: " ready." in process.output(), timeout=timeout, what=f"{process.name} to be ready",
               log=process.output)


# --- writing through the services --------------------------------------------------------------


@pytest.fixture
def worker_sessions() -> Iterator[Callable[[WorkerSetup], sessionmaker[Session]]]:
    """Sessions on a WorkerSetup's database, for writing through the services (with no wake-up
    hook: like a process that died right after committing, they leave dispatch to the sweep)."""
    engines = []

    def sessions_for(setup: WorkerSetup) -> sessionmaker[Session]:
        engine = create_sync_db_engine(setup.settings())
        engines.append(engine)
        return sync_session_factory(engine)

    yield sessions_for
    for engine in engines:
        engine.dispose()


@dataclass(frozen=True)
class Pair:
    alice: User
    bob: User
    conversation_id: str


def start_conversation(sessions: sessionmaker[Session], tag: str = "") -> Pair:
    with sessions() as session:
        alice = create_user(session, NewUser(username=f"alice{tag}", name="Alice"))
        bob = create_user(session, NewUser(username=f"bob{tag}", name="Bob"))
        conversation, _ = get_or_create_conversation(session, alice, OtherUser(user_id=bob.id))
    return Pair(alice, bob, conversation.id)


def send_messages(
    sessions: sessionmaker[Session], settings: Settings, pair: Pair, count: int, prefix: str = "m"
) -> list[str]:
    """Send `count` messages through the service layer (a commit, and no nudge: what an API process
    that died right after committing leaves behind)."""
    ids = []
    with sessions() as session:
        for n in range(count):
            draft = MessageDraft(content=f"{prefix}{n}")
            message, _ = send_message(session, settings, pair.alice, pair.conversation_id, draft)
            ids.append(message.id)
    return ids
