"""Webhook delivery benchmark: events carried through the outbox to signed HTTP deliveries at a
local receiver, with two worker processes.

    .venv/bin/python bench/webhooks_bench.py                     # defaults below, about a minute
    .venv/bin/python bench/webhooks_bench.py --endpoints 50 --rate 20 --seconds 20

Each of two runs starts from nothing, all on 127.0.0.1 and all removed afterwards: a private
PostgreSQL database, a private redis-server, a receiver process (aiohttp; `/ok/...` answers 200 at
once, `/hang/...` never answers), beat and one Celery worker with two processes
(`parley worker --concurrency 2`). --endpoints admin endpoints subscribe to every event, so each
event becomes one delivery per endpoint.

1. Healthy: every endpoint answers at once.
2. Hanging: --hanging-fraction of the endpoints (10%) never answer. The webhook timeout is set
   to --hanging-timeout seconds (2 s, instead of the shipped 15 s) so the run shows timeouts and
   retries within a short benchmark; the healthy endpoints must not notice either way.

In each run:
- Steady phase: --rate events/s committed into the outbox for --seconds (a transaction every
  10 ms, a dispatcher nudge at most every 20 ms, as API processes do), i.e. rate x endpoints
  deliveries/s offered. Reported: deliveries/s achieved, and for the healthy endpoints the time
  from the event's commit to the receiver's 200 being recorded: median, p95, p99, max.
- Burst phase: --burst events committed at once, one nudge: deliveries/s until the last healthy
  delivery is done (the capacity of two worker processes).

Figures are printed, never asserted. Target on a 2-core machine: 500 deliveries/s, and the healthy
endpoints' p99 under 1 s while the hanging ones time out. The receiver, PostgreSQL, Redis, the
worker and this load generator all share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, insert, select

from events_bench import (
    Sender,
    child,
    free_port,
    percentile,
    private_database,
    private_redis,
    steady_arrival,
    wait_for,
)
from parley.config import Settings, load_settings
from parley.db import async_session_factory, create_async_db_engine, create_sync_db_engine
from parley.migrate import upgrade_to_head
from parley.models import DeliveryStatus, Event, WebhookAttempt, WebhookDelivery
from parley.services.conversations import OtherUser, get_or_create_conversation
from parley.services.users import NewUser, create_user
from parley.services.webhooks import EndpointDraft, create_endpoint
from webhooks.ssrf import UrlGuard
from workers.celery_app import create_celery_app
from workers.tasks import DISPATCH_TASK

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "webhooks-bench-secret-key-0123456789abcdef"
DRAIN_TIMEOUT = 300.0

RECEIVER_PROCESS = """
import asyncio, sys
from aiohttp import web
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass

async def ok(request):
    await request.read()
    return web.Response(text="ok")

async def hang(request):
    await asyncio.sleep(3600)
    return web.Response(text="late")

app = web.Application()
app.router.add_post("/ok/{n}", ok)
app.router.add_post("/hang/{n}", hang)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, backlog=1024)
"""


@dataclass(frozen=True)
class Figures:
    offered_per_second: float
    delivered_per_second: float
    latency_ms: list[float]
    burst_per_second: float
    hanging_timeouts: int


async def prepare(settings: Settings, receiver_port: int, endpoints: int, hanging: int) -> tuple[str, set[str]]:
    """One conversation (its events are what is delivered) and the endpoints; returns the
    conversation id and the hanging endpoints' ids."""
    engine = create_async_db_engine(settings)
    sessions = async_session_factory(engine)
    hanging_ids: set[str] = set()
    guard = UrlGuard(settings)
    try:
        async with sessions() as session:
            alice = await session.run_sync(create_user, NewUser(username="alice", name="Alice"))
            bob = await session.run_sync(create_user, NewUser(username="bob", name="Bob"))
            conversation, _ = await session.run_sync(get_or_create_conversation, alice, OtherUser(user_id=bob.id))
            for n in range(endpoints):
                kind = "hang" if n < hanging else "ok"
                draft = EndpointDraft(url=f"http://127.0.0.1:{receiver_port}/{kind}/{n}")
                guard(draft.url)  # as the API does before it records an endpoint
                created = await session.run_sync(create_endpoint, settings, None, draft)
                if kind == "hang":
                    hanging_ids.add(created.endpoint.id)
    finally:
        await engine.dispose()
    return conversation.id, hanging_ids


def commit_events(settings: Settings, engine, conversation_id: str, rate: float, seconds: float) -> int:  # type: ignore[no-untyped-def]
    """Commit `rate` events a second for `seconds`, nudging the dispatcher as the API would."""
    return steady_arrival(settings, engine, [Sender(conversation_id, {})], rate, seconds)


def healthy_done(engine, after_event: int, hanging: set[str]) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.scalar(
            select(func.count()).select_from(WebhookDelivery)
            .where(WebhookDelivery.event_id > after_event, WebhookDelivery.status == DeliveryStatus.SUCCEEDED,
                   WebhookDelivery.endpoint_id.not_in(hanging or {""}))
        ) or 0)


def delivered(engine, after_event: int, hanging: set[str]) -> list[tuple[float, float, float]]:  # type: ignore[no-untyped-def]
    """(event committed, answer recorded, latency ms) of each healthy endpoint's successful attempt."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(Event.created_at, WebhookAttempt.attempted_at, WebhookAttempt.duration_ms)
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .join(Event, Event.id == WebhookDelivery.event_id)
            .where(Event.id > after_event, WebhookAttempt.status_code == 200,
                   WebhookDelivery.endpoint_id.not_in(hanging or {""}))
        ).all()
    result = []
    for created, attempted, duration in rows:
        done = attempted.timestamp() + (duration or 0) / 1000
        result.append((created.timestamp(), done, (done - created.timestamp()) * 1000))
    return result


def max_event_id(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)


def timeouts(engine, hanging: set[str]) -> int:  # type: ignore[no-untyped-def]
    if not hanging:
        return 0
    with engine.connect() as connection:
        return int(connection.scalar(
            select(func.count()).select_from(WebhookAttempt)
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .where(WebhookDelivery.endpoint_id.in_(hanging), WebhookAttempt.error.like("no answer within%"))
        ) or 0)


def run(args: argparse.Namespace, *, hanging_fraction: float, timeout: float) -> Figures:
    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-webhooks-bench-")))
        database_url = stack.enter_context(private_database(args.postgres_url))
        broker_url = stack.enter_context(private_redis(logs))
        settings = load_settings(database_url=database_url, broker_url=broker_url, secret_key=SECRET_KEY,
                                 webhook_allowed_cidrs=["127.0.0.1/32"], webhook_timeout_seconds=timeout)
        upgrade_to_head(settings)
        engine = create_sync_db_engine(settings)
        stack.callback(engine.dispose)
        receiver_port = free_port()
        hanging_count = round(args.endpoints * hanging_fraction)
        conversation_id, hanging = asyncio.run(prepare(settings, receiver_port, args.endpoints, hanging_count))

        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(PARLEY_DATABASE_URL=database_url, PARLEY_BROKER_URL=broker_url, PARLEY_LOG_LEVEL="WARNING",
                   PARLEY_SECRET_KEY=SECRET_KEY, PARLEY_WEBHOOK_ALLOWED_CIDRS="127.0.0.1/32",
                   PARLEY_WEBHOOK_TIMEOUT_SECONDS=str(timeout), PARLEY_OUTBOX_SWEEP_SECONDS="1",
                   PYTHONPATH=str(ROOT))
        stack.enter_context(child([sys.executable, "-c", RECEIVER_PROCESS, str(receiver_port)], env, logs / "receiver.log"))
        stack.enter_context(child(
            [sys.executable, "-m", "parley.cli", "worker", "--concurrency", str(args.worker_concurrency)],
            env, logs / "worker.log",
        ))
        stack.enter_context(child([sys.executable, "-m", "parley.cli", "beat"], env, logs / "beat.log"))
        healthy_endpoints = args.endpoints - len(hanging)

        # Warm-up, which also waits for the worker to come up.
        before = max_event_id(engine)
        warm = commit_events(settings, engine, conversation_id, args.rate, 1.0)
        wait_for(lambda: healthy_done(engine, before, hanging) >= warm * healthy_endpoints, "the warm-up", DRAIN_TIMEOUT)

        before = max_event_id(engine)
        started = time.perf_counter()
        written = commit_events(settings, engine, conversation_id, args.rate, args.seconds)
        offered = written * args.endpoints / (time.perf_counter() - started)
        wait_for(lambda: healthy_done(engine, before, hanging) >= written * healthy_endpoints,
                 "the steady phase's deliveries", DRAIN_TIMEOUT)
        steady = delivered(engine, before, hanging)
        if args.breakdown:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(Event.created_at, Event.dispatched_at, WebhookDelivery.created_at)
                    .join(WebhookDelivery, WebhookDelivery.event_id == Event.id).where(Event.id > before)
                ).all()
            print("    (commit -> dispatched     ", describe([(d - c).total_seconds() * 1000 for c, d, _ in rows]) + ")")
            print("    (commit -> fanned out     ", describe([(f - c).total_seconds() * 1000 for c, _, f in rows]) + ")")
        window = max(d for _, d, _ in steady) - min(c for c, _, _ in steady)
        hanging_timeouts = timeouts(engine, hanging)

        before = max_event_id(engine)
        with engine.begin() as connection:
            connection.execute(insert(Event), [
                {"type": "message.created", "conversation_id": conversation_id, "payload": {"n": n}}
                for n in range(args.burst)
            ])
        celery = create_celery_app(settings)
        celery.send_task(DISPATCH_TASK)
        celery.close()
        wait_for(lambda: healthy_done(engine, before, hanging) >= args.burst * healthy_endpoints,
                 "the burst's deliveries", DRAIN_TIMEOUT)
        burst = delivered(engine, before, hanging)
        burst_window = max(d for _, d, _ in burst) - min(c for c, _, _ in burst)
        return Figures(
            offered_per_second=offered,
            delivered_per_second=len(steady) / window,
            latency_ms=[latency for _, _, latency in steady],
            burst_per_second=len(burst) / burst_window,
            hanging_timeouts=hanging_timeouts,
        )


def describe(values: list[float]) -> str:
    return (f"median {statistics.median(values):.0f} ms, p95 {percentile(values, 0.95):.0f} ms, "
            f"p99 {percentile(values, 0.99):.0f} ms, max {max(values):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", default=os.environ.get("PARLEY_TEST_POSTGRES_URL",
                                                                  "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--rate", type=float, default=30, help="events/s in the steady phase (x endpoints = deliveries/s)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=300, help="events committed at once in the burst phase")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--hanging-fraction", type=float, default=0.1)
    parser.add_argument("--hanging-timeout", type=float, default=2.0, help="webhook timeout in the hanging run")
    parser.add_argument("--breakdown", action="store_true", help="also print commit -> dispatched and -> fanned out")
    args = parser.parse_args()

    print(f"\nParley webhooks ({os.cpu_count()} cores shared by the receiver, PostgreSQL, Redis, the worker and "
          f"the load generator); one worker with {args.worker_concurrency} processes; {args.endpoints} endpoints")
    runs = [("healthy", 0.0, 15.0), ("hanging", args.hanging_fraction, args.hanging_timeout)]
    for name, fraction, timeout in runs:
        hanging = round(args.endpoints * fraction)
        print(f"  {name}: {hanging} of {args.endpoints} endpoints never answer, webhook timeout {timeout:g} s")
        figures = run(args, hanging_fraction=fraction, timeout=timeout)
        print(f"    steady: {figures.offered_per_second:,.0f} deliveries/s offered for {args.seconds:g} s, "
              f"{figures.delivered_per_second:,.0f}/s delivered to the healthy endpoints")
        print(f"    event -> healthy delivery   {describe(figures.latency_ms)}")
        if hanging:
            print(f"    hanging endpoints: {figures.hanging_timeouts} attempts timed out during the steady phase")
        print(f"    burst: {args.burst} events x {args.endpoints - hanging} healthy endpoints at once: "
              f"{figures.burst_per_second:,.0f} deliveries/s")


if __name__ == "__main__":
    main()
