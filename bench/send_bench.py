"""The send path and the consumer path, in one run: what one HTTP send costs the API, how many
messages reach the recipient's WebSocket and how fast, and how many events the consumers get through.

    .venv/bin/python bench/send_bench.py                     # everything below
    .venv/bin/python bench/send_bench.py --skip-consumers --senders 10 --cpu-sends 2000
    .venv/bin/python bench/send_bench.py --profile 10        # py-spy the API while it takes sends

What it does, all on 127.0.0.1 with a private PostgreSQL database and a private redis-server (the
realtime bus and the broker), cleaned up afterwards:
1. Starts the API as `parley serve --workers 2`.
2. CPU per send: 10 clients post --cpu-sends 100-byte messages in a closed loop, nobody listening;
   prints the CPU time the API processes spent (utime + stime from /proc, every process of the
   server's session) divided by the sends, and sends/s.
3. For each S in --senders: S recipients connect over WebSocket and S senders each post into their
   own conversation in a closed loop for --seconds; prints messages/s delivered and send-to-receive
   median and p99 (bench/realtime_bench.py's loop).
4. Consumer events/s: --events events committed at once, then two worker processes (`parley worker
   -c 1` twice) run the no-op `workers.log_consumer` on them; prints events/s from the first
   receipt to the last.

Figures are printed, never asserted. Targets on a 2-core machine: 1.0 ms of API CPU per send; at
S = 50 at least 1,000 messages/s delivered with p99 under 100 ms; 2,000 consumer events/s. The load
generator, the API processes, PostgreSQL and Redis share the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from events_bench import (  # noqa: E402  (sibling scripts, not a package)
    Sender,
    child,
    make_senders,
    private_database,
    private_redis,
    wait_for,
)
from realtime_bench import api_env, send_and_deliver, start_api  # noqa: E402

from parley.config import load_settings  # noqa: E402
from parley.db import create_sync_db_engine  # noqa: E402
from parley.migrate import upgrade_to_head  # noqa: E402
from parley.models import ConsumerReceipt, Event  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONTENT = "x" * 92  # with the 8-character counter below: 100 bytes


def tree_cpu_seconds(root_pid: int) -> float:
    """utime + stime of a process and all its live descendants (the server and its API processes)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    tree = {root_pid}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(stats[pid][1] for pid in tree if pid in stats)


async def closed_loop_sends(base: str, senders: list[Sender], total: int, clients: int) -> tuple[float, int]:
    """`clients` clients post `total` messages between them; returns (seconds, failures)."""
    remaining = total
    failures = 0

    async def client(http: aiohttp.ClientSession, sender: Sender) -> None:
        nonlocal remaining, failures
        url = f"{base}/api/v1/conversations/{sender.conversation_id}/messages"
        while remaining > 0:
            remaining -= 1
            async with http.post(url, json={"content": f"{CONTENT}{remaining:08d}"}, headers=sender.auth) as response:
                if response.status != 201:
                    failures += 1
                await response.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, senders[n % len(senders)]) for n in range(clients)))
        return time.perf_counter() - started, failures


def measure_cpu_per_send(base: str, server_pid: int, senders: list[Sender], sends: int, profile: float) -> None:
    asyncio.run(closed_loop_sends(base, senders, 200, 10))  # warm up: pools, caches, statement caches
    spy = None
    if profile:
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses", "--nonblocking", "-d",
             str(int(profile)), "-f", "raw", "-o", "send-profile.txt", "-p", str(server_pid)],
        )
    before = tree_cpu_seconds(server_pid)
    seconds, failures = asyncio.run(closed_loop_sends(base, senders, sends, 10))
    spent = tree_cpu_seconds(server_pid) - before
    print(
        f"  CPU per send: {spent * 1000 / sends:.2f} ms of API-process CPU ({sends} sends from 10 clients, "
        f"{sends / seconds:.0f} sends/s, {failures} failed)"
    )
    if spy is not None:
        spy.wait()
        print("  py-spy profile written to send-profile.txt (collapsed stacks)")


def measure_consumers(env: dict[str, str], database_url: str, events: int, workdir: Path) -> None:
    settings = load_settings(database_url=database_url)
    engine = create_sync_db_engine(settings)
    try:
        with engine.begin() as connection:
            first_new = (connection.scalar(select(func.max(Event.id))) or 0) + 1
            connection.execute(Event.__table__.update().values(dispatched_at=func.now()))
            rows = [
                {"type": "webhook.test", "conversation_id": None, "user_id": None, "payload": {"n": n}}
                for n in range(events)
            ]
            connection.execute(Event.__table__.insert(), rows)
        worker_env = {**env, "PARLEY_EXTRA_CONSUMERS": "workers.log_consumer"}
        with ExitStack() as workers:
            for n in range(2):
                argv = [sys.executable, "-m", "parley.cli", "worker", "-c", "1", "-n", f"bench{n}@%h", "-Q", "events,webhooks"]
                workers.enter_context(child(argv, worker_env, workdir / f"worker-{n}.log"))

            def done() -> int:
                with engine.connect() as connection:
                    return int(
                        connection.scalar(
                            select(func.count()).where(
                                ConsumerReceipt.consumer == "log", ConsumerReceipt.event_id >= first_new
                            )
                        )
                        or 0
                    )

            wait_for(lambda: done() > 0, "the first receipt", 120)
            started = time.perf_counter()
            first = done()
            wait_for(lambda: done() >= events, "every receipt", 600)
            seconds = time.perf_counter() - started
        print(
            f"  consumer events/s, two worker processes: {(events - first) / seconds:.0f} "
            f"({events} events of the no-op consumer; {events - first} after the first receipt in {seconds:.1f} s)"
        )
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--cpu-sends", type=int, default=2000)
    parser.add_argument("--senders", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--skip-consumers", action="store_true")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy the API for this many seconds")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="parley-send-bench-") as tmp:
        workdir = Path(tmp)
        database_url = stack.enter_context(private_database(args.postgres))
        redis_url = stack.enter_context(private_redis(workdir))
        settings = load_settings(database_url=database_url, redis_url=redis_url)
        upgrade_to_head(settings)
        env = api_env(database_url, redis_url)
        pairs = asyncio.run(make_senders(settings, max([10, *args.senders]), "p"))
        print(f"PostgreSQL + Redis, {os.cpu_count()} cores, parley serve --workers {args.api_processes}")
        with ExitStack() as api:
            base, pid = start_api(api, env, args.api_processes, workdir)
            measure_cpu_per_send(base, pid, pairs[:10], args.cpu_sends, args.profile)
            for count in args.senders:
                asyncio.run(send_and_deliver(base, pairs[:count], args.seconds))
        if not args.skip_consumers:
            measure_consumers(env, database_url, args.events, workdir)


if __name__ == "__main__":
    main()
