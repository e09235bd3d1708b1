"""Event pipeline benchmark: messages sent over HTTP, carried through the outbox to a no-op consumer.

    .venv/bin/python bench/events_bench.py                       # defaults below, about a minute
    .venv/bin/python bench/events_bench.py --messages 10000 --concurrency 64 --api-processes 2

What it does, all on 127.0.0.1 and all cleaned up afterwards:
1. Creates a private PostgreSQL database (dropped at the end) and starts a private redis-server.
2. Starts the API (`parley serve`, or N reuse_port processes), beat, and one Celery worker with
   two processes (`parley worker --concurrency 2`), with the documented no-op consumer
   `workers.log_consumer` registered. Logging is at WARNING, as a loaded deployment would run.
3. HTTP phase: sends --messages messages from --concurrency clients (closed loop) across
   --conversations conversations, and reports sends/s. For every message event it then reports
   the time from the event's insert (inside the committing transaction) to its being marked
   dispatched (its task is in Redis) and to the no-op consumer starting on it (the receipt's
   timestamp, taken inside the consumer's transaction): median, p95, p99, max.
4. Steady phase: commits --rate events/s for --seconds straight into the outbox (a transaction
   every 10 ms, a nudge at most every 50 ms, as API processes would, without HTTP, whose cost is
   the API's), and reports the same two latencies.
5. Backlog phase: bulk-inserts --backlog undispatched events straight into the outbox (what a
   broker outage leaves behind), nudges once, and reports the events/s dispatched (to the last
   dispatched_at) and consumed (to the last receipt).

Figures are printed, never asserted. The target on a 2-core machine is 1,000 events/s dispatched
with p99 under 250 ms; the HTTP client, the API, PostgreSQL, Redis and the worker share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psycopg
import redis
from sqlalchemy import func, insert, select

from parley.config import Settings, load_settings
from parley.db import async_session_factory, create_async_db_engine, create_sync_db_engine
from parley.migrate import upgrade_to_head
from parley.models import ConsumerReceipt, Event
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.tokens import create_token
from parley.services.users import NewUser, create_user
from workers.celery_app import create_celery_app
from workers.nudger import NUDGE_MIN_INTERVAL_SECONDS
from workers.task_names import DISPATCH_TASK

ROOT = Path(__file__).resolve().parents[1]
CONSUMER = "log"
READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_api(base: str, timeout: float = READY_TIMEOUT) -> None:
    """Until the API at `base` answers /readyz with 200 (it is up and reaches its database)."""

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(ready, "the API", timeout)


@contextmanager
def private_database(admin_url: str) -> Iterator[str]:
    name = f"parley_events_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )
    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(answers, "redis-server", 10)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait(10)


@contextmanager
def child(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
                                   start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


API_PROCESS = """
import sys
from aiohttp import web
from parley.api.app import init_app
from parley.config import load_settings
web.run_app(init_app(load_settings()), host="127.0.0.1", port=int(sys.argv[1]), reuse_port=True,
            access_log=None, print=None)
"""


@dataclass(frozen=True)
class Sender:
    conversation_id: str
    auth: dict[str, str]  # the sender's
    recipient_auth: dict[str, str] = field(default_factory=dict)  # the other member's


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def make_senders(settings: Settings, conversations: int, prefix: str = "") -> list[Sender]:
    """One conversation per sender between two new users (named <prefix>a<n> and <prefix>b<n>),
    with a token for each of them."""
    engine = create_async_db_engine(settings)
    sessions = async_session_factory(engine)
    senders = []
    try:
        async with sessions() as session:
            for n in range(conversations):
                alice = await session.run_sync(create_user, NewUser(username=f"{prefix}a{n}", name=f"A{n}"))
                bob = await session.run_sync(create_user, NewUser(username=f"{prefix}b{n}", name=f"B{n}"))
                conversation, _ = await session.run_sync(get_or_create_conversation, alice, OtherUser(user_id=bob.id))
                sender = await session.run_sync(create_token, alice.id, "bench")
                recipient = await session.run_sync(create_token, bob.id, "bench")
                senders.append(Sender(conversation.id, _bearer(sender.secret), _bearer(recipient.secret)))
    finally:
        await engine.dispose()
    return senders


async def send_messages(base: str, senders: list[Sender], count: int, concurrency: int) -> float:
    """Closed loop: `concurrency` clients each send their next message when the last one returns.
    Returns the elapsed seconds."""
    next_index = 0
    failures = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal next_index, failures
        while next_index < count:
            n = next_index
            next_index += 1
            sender = senders[n % len(senders)]
            async with http.post(f"{base}/api/v1/conversations/{sender.conversation_id}/messages",
                                 json={"content": f"message {n}"}, headers=sender.auth) as response:
                if response.status != 201:
                    failures += 1
                await response.read()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{failures} sends failed")
    return elapsed


def receipts_done(engine, after_id: int) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.scalar(
            select(func.count()).select_from(ConsumerReceipt)
            .where(ConsumerReceipt.consumer == CONSUMER, ConsumerReceipt.event_id > after_id)
        ) or 0)


def max_event_id(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)


def bench_event(conversation_id: str, n: int) -> dict[str, object]:
    """An event for the steady and backlog phases: a test ping to an endpoint that does not exist,
    which the no-op consumer takes and the built-in consumers pass over at next to no cost (a fake
    message.created would send the email notifier and others real work with an invalid payload)."""
    return {
        "type": "webhook.test",
        "conversation_id": conversation_id,
        "payload": {"endpoint_id": f"bench-{n}", "owner_id": None},
        "audience": [],
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Timings:
    dispatch_ms: list[float]  # event insert -> marked dispatched (its tasks are in Redis)
    consume_ms: list[float]  # event insert -> the no-op consumer starts on it
    consumed_per_second: float  # over the window from the first insert to the last receipt


def timings(engine, after_id: int) -> Timings:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        rows = connection.execute(
            select(Event.created_at, Event.dispatched_at, ConsumerReceipt.finished_at)
            .join(ConsumerReceipt, ConsumerReceipt.event_id == Event.id)
            .where(ConsumerReceipt.consumer == CONSUMER, Event.id > after_id)
        ).all()
    window = (max(r.finished_at for r in rows) - min(r.created_at for r in rows)).total_seconds()
    return Timings(
        dispatch_ms=[(r.dispatched_at - r.created_at).total_seconds() * 1000 for r in rows],
        consume_ms=[(r.finished_at - r.created_at).total_seconds() * 1000 for r in rows],
        consumed_per_second=len(rows) / window,
    )


def describe(values: list[float]) -> str:
    return (f"median {statistics.median(values):.1f} ms, p95 {percentile(values, 0.95):.1f} ms, "
            f"p99 {percentile(values, 0.99):.1f} ms, max {max(values):.1f} ms")


def steady_arrival(  # type: ignore[no-untyped-def]
    settings: Settings, engine, senders: list[Sender], rate: float, seconds: float
) -> int:
    """Commit `rate` events a second for `seconds`, as API processes would (a transaction every
    10 ms holding that tick's events, a nudge at most every NUDGE_MIN_INTERVAL_SECONDS like the API's nudger), without
    the HTTP layer, whose cost is the API's and not the pipeline's. Returns the events written."""
    celery = create_celery_app(settings)
    tick = 0.01
    owed = 0.0  # fractions of an event carried to the next tick, so low rates come out right too
    written = 0
    last_nudge = 0.0
    started = time.perf_counter()
    next_tick = started
    try:
        while time.perf_counter() - started < seconds:
            owed += rate * tick
            per_tick, owed = int(owed), owed - int(owed)
            if per_tick:
                with engine.begin() as connection:
                    connection.execute(insert(Event), [
                        bench_event(senders[(written + n) % len(senders)].conversation_id, written + n)
                        for n in range(per_tick)
                    ])
            written += per_tick
            now = time.perf_counter()
            if now - last_nudge >= NUDGE_MIN_INTERVAL_SECONDS:
                celery.send_task(DISPATCH_TASK, retry=False)
                last_nudge = now
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        celery.send_task(DISPATCH_TASK, retry=False)  # the trailing nudge, as the API's nudger sends one
    finally:
        celery.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", default=os.environ.get("PARLEY_TEST_POSTGRES_URL",
                                                                  "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--rate", type=int, default=1000, help="events/s committed in the steady phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the steady phase")
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--prefetch-multiplier", type=int, default=1, help="Celery worker prefetch (shipped: 1)")
    args = parser.parse_args()

    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-events-bench-")))
        database_url = stack.enter_context(private_database(args.postgres_url))
        broker_url = stack.enter_context(private_redis(logs))
        settings = load_settings(database_url=database_url, broker_url=broker_url,
                                 extra_consumers=["workers.log_consumer"], database_pool_size=10)
        upgrade_to_head(settings)
        engine = create_sync_db_engine(settings)
        stack.callback(engine.dispose)
        senders = asyncio.run(make_senders(settings, args.conversations))

        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(PARLEY_DATABASE_URL=database_url, PARLEY_BROKER_URL=broker_url,
                   PARLEY_EXTRA_CONSUMERS="workers.log_consumer", PARLEY_LOG_LEVEL="WARNING",
                   PARLEY_DATABASE_POOL_SIZE="10", PYTHONPATH=str(ROOT))
        port = free_port()
        for n in range(args.api_processes):
            stack.enter_context(child([sys.executable, "-c", API_PROCESS, str(port)], env, logs / f"api-{n}.log"))
        stack.enter_context(child(
            [sys.executable, "-m", "parley.cli", "worker", "--concurrency", str(args.worker_concurrency),
             "--prefetch-multiplier", str(args.prefetch_multiplier)],
            env, logs / "worker.log",
        ))
        stack.enter_context(child([sys.executable, "-m", "parley.cli", "beat"], env, logs / "beat.log"))
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base)

        # Warm-up, which also waits for the worker: connections, imports, first requests.
        before = max_event_id(engine)
        asyncio.run(send_messages(base, senders, 300, args.concurrency))
        wait_for(lambda: receipts_done(engine, before) >= 300, "the warm-up", DRAIN_TIMEOUT)

        # HTTP phase.
        before = max_event_id(engine)
        elapsed = asyncio.run(send_messages(base, senders, args.messages, args.concurrency))
        wait_for(lambda: receipts_done(engine, before) >= args.messages, "the HTTP phase's events", DRAIN_TIMEOUT)
        http = timings(engine, before)

        # Steady phase: events committed at --rate a second, straight into the outbox.
        before = max_event_id(engine)
        steady_started = time.perf_counter()
        written = steady_arrival(settings, engine, senders, args.rate, args.seconds)
        steady_elapsed = time.perf_counter() - steady_started
        wait_for(lambda: receipts_done(engine, before) >= written, "the steady phase's events", DRAIN_TIMEOUT)
        steady = timings(engine, before)

        # Backlog phase: the outbox fills with no nudge (as during a broker outage), then one nudge.
        before = max_event_id(engine)
        with engine.begin() as connection:
            connection.execute(insert(Event), [
                bench_event(senders[n % len(senders)].conversation_id, n) for n in range(args.backlog)
            ])
        celery = create_celery_app(settings)
        nudged = datetime.now(UTC)
        celery.send_task(DISPATCH_TASK)
        celery.close()
        wait_for(lambda: receipts_done(engine, before) >= args.backlog, "the backlog", DRAIN_TIMEOUT)
        with engine.connect() as connection:
            last_dispatched, last_done = connection.execute(
                select(func.max(Event.dispatched_at), func.max(ConsumerReceipt.finished_at))
                .join(ConsumerReceipt, ConsumerReceipt.event_id == Event.id)
                .where(Event.id > before)
            ).one()

        print(f"\nParley event pipeline ({os.cpu_count()} cores, shared by everything below)")
        print(f"  API x{args.api_processes}, one worker with {args.worker_concurrency} processes "
              f"(prefetch {args.prefetch_multiplier}), Redis, PostgreSQL; no-op consumer `{CONSUMER}`")
        print(f"  HTTP: {args.messages} messages from {args.concurrency} clients: "
              f"{args.messages / elapsed:,.0f} sends/s")
        print(f"    commit -> dispatched      {describe(http.dispatch_ms)}")
        print(f"    commit -> consumer runs   {describe(http.consume_ms)}")
        print(f"    consumed                  {http.consumed_per_second:,.0f} events/s while the load ran")
        print(f"  Steady: {written} events committed at {written / steady_elapsed:,.0f}/s for {steady_elapsed:.1f} s "
              f"(no HTTP):")
        print(f"    commit -> dispatched      {describe(steady.dispatch_ms)}")
        print(f"    commit -> consumer runs   {describe(steady.consume_ms)}")
        print(f"    consumed                  {steady.consumed_per_second:,.0f} events/s")
        assert last_dispatched is not None and last_done is not None
        dispatched_s = (last_dispatched - nudged).total_seconds()
        done_s = (last_done - nudged).total_seconds()
        print(f"  Backlog: {args.backlog} events already in the outbox, one nudge:")
        print(f"    dispatched                {args.backlog / dispatched_s:,.0f} events/s ({dispatched_s:.2f} s)")
        print(f"    consumed                  {args.backlog / done_s:,.0f} events/s ({done_s:.2f} s)")


if __name__ == "__main__":
    main()
