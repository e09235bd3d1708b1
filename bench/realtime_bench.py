"""Realtime benchmark: messages sent over HTTP and delivered over WebSocket, and the memory of idle
connections.

    .venv/bin/python bench/realtime_bench.py                       # S = 1, 10, 50; 10,000 idle
    .venv/bin/python bench/realtime_bench.py --senders 50 --seconds 20 --api-processes 1 2

What it does, all on 127.0.0.1 and cleaned up afterwards:
1. Creates a private PostgreSQL database and starts a private redis-server.
2. Starts the API as `parley serve --workers N` (N = --api-processes, sharing the port through
   SO_REUSEPORT and the realtime bus through Redis), logging at WARNING.
3. For each S in --senders: S recipients connect over WebSocket; S senders each post into their own
   conversation in a closed loop for --seconds. Every message carries its send time; the recipient
   notes its arrival. Prints messages/s delivered and send-to-receive latency (median, p99, max).
4. Starts one API process alone, opens --idle idle WebSocket connections to it (--idle-users users
   with several connections each), and prints its resident memory before and after.

Figures are printed, never asserted. Targets on a 2-core machine with PostgreSQL: at S = 50, at
least 1,000 messages/s delivered with p99 under 100 ms; 10,000 idle connections in under 1 GiB.
The load generator, the API processes, PostgreSQL and Redis share the two cores.
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
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from events_bench import (  # noqa: E402  (a sibling script, not a package)
    ROOT,
    Sender,
    child,
    free_port,
    make_senders,
    percentile,
    private_database,
    private_redis,
    wait_for_api,
)

from parley.config import load_settings  # noqa: E402
from parley.migrate import upgrade_to_head  # noqa: E402

DRAIN_SECONDS = 15.0


async def send_and_deliver(base: str, senders: list[Sender], seconds: float) -> None:
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    failures = 0
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets = [await http.ws_connect(f"{base}/api/v1/ws", headers=p.recipient_auth) for p in senders]

        async def receive(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for message in ws:
                frame = message.json()
                if frame["type"] == "message.created":
                    content = frame["data"]["message"]["content"]
                    started = sent_at.get(content)
                    if started is not None:
                        latencies.append(time.perf_counter() - started)

        async def send(index: int, sender: Sender) -> None:
            nonlocal failures
            n = 0
            url = f"{base}/api/v1/conversations/{sender.conversation_id}/messages"
            while not stop.is_set():
                content = f"{index}:{n}"
                n += 1
                sent_at[content] = time.perf_counter()
                async with http.post(url, json={"content": content}, headers=sender.auth) as response:
                    if response.status != 201:
                        failures += 1
                    await response.read()

        receivers = [asyncio.create_task(receive(ws)) for ws in sockets]
        started = time.perf_counter()
        sending_tasks = [asyncio.create_task(send(i, p)) for i, p in enumerate(senders)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*sending_tasks)
        sending = time.perf_counter() - started
        deadline = time.perf_counter() + DRAIN_SECONDS
        while len(latencies) < len(sent_at) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for ws in sockets:
            await ws.close()
        for task in receivers:
            task.cancel()
    lost = len(sent_at) - len(latencies)
    print(
        f"  S={len(senders):>3}: {len(sent_at)} sent in {sending:.1f} s, {len(latencies) / sending:7.1f} messages/s delivered; "
        f"send->receive median {statistics.median(latencies) * 1000:6.1f} ms, p99 {percentile(latencies, 0.99) * 1000:6.1f} ms, "
        f"max {max(latencies) * 1000:6.1f} ms; undelivered {lost}, failed sends {failures}"
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def idle_connections(base: str, pid: int, senders: list[Sender], total: int) -> None:
    tokens = [p.recipient_auth for p in senders] + [p.auth for p in senders]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        first = await http.ws_connect(f"{base}/api/v1/ws", headers=tokens[0])
        await first.receive_json()
        before = rss_mib(pid)
        sockets = [first]
        gate = asyncio.Semaphore(100)

        async def open_one(n: int) -> None:
            async with gate:
                ws = await http.ws_connect(f"{base}/api/v1/ws", headers=tokens[n % len(tokens)], heartbeat=None)
                await ws.receive_json()  # hello: the server has registered it
                sockets.append(ws)

        started = time.perf_counter()
        await asyncio.gather(*(open_one(n) for n in range(total - 1)))
        opened = time.perf_counter() - started
        await asyncio.sleep(2)  # let the server's presence refresh and allocator settle
        after = rss_mib(pid)
        print(
            f"  {len(sockets)} idle connections ({len(tokens)} users) opened in {opened:.1f} s: API process RSS "
            f"{before:.0f} MiB -> {after:.0f} MiB ({(after - before) * 1024 / len(sockets):.1f} KiB per connection)"
        )
        await asyncio.gather(*(ws.close() for ws in sockets))


def api_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(
        PARLEY_DATABASE_URL=database_url,
        PARLEY_REDIS_URL=redis_url,
        PARLEY_BROKER_URL=redis_url,
        PARLEY_LOG_LEVEL="WARNING",
        PARLEY_DATABASE_POOL_SIZE="20",
        PYTHONPATH=str(ROOT),
    )
    return env


def start_api(stack: ExitStack, env: dict[str, str], processes: int, workdir: Path) -> tuple[str, int]:
    port = free_port()
    argv = [sys.executable, "-m", "parley.cli", "serve", "--no-migrate", "--port", str(port), "--workers", str(processes)]
    process = stack.enter_context(child(argv, env, workdir / f"api-{port}.log"))
    base = f"http://127.0.0.1:{port}"
    wait_for_api(base)
    return base, process.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--senders", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--api-processes", type=int, nargs="+", default=[2])
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections for the memory figure (0: skip)")
    parser.add_argument("--idle-users", type=int, default=500, help="pairs of users the idle connections belong to")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="parley-rt-bench-") as tmp:
        workdir = Path(tmp)
        database_url = stack.enter_context(private_database(args.postgres))
        redis_url = stack.enter_context(private_redis(workdir))
        settings = load_settings(database_url=database_url, redis_url=redis_url)
        upgrade_to_head(settings)
        env = api_env(database_url, redis_url)
        pairs = asyncio.run(make_senders(settings, max(args.senders), "p"))
        print(f"PostgreSQL + Redis, {os.cpu_count()} cores; each sender posts into its own conversation, closed loop")
        for processes in args.api_processes:
            with ExitStack() as api:
                base, _ = start_api(api, env, processes, workdir)
                print(f"parley serve --workers {processes}:")
                for count in args.senders:
                    asyncio.run(send_and_deliver(base, pairs[:count], args.seconds))
        if args.idle:
            idle_senders = asyncio.run(make_senders(settings, args.idle_users, "i"))
            with ExitStack() as api:
                base, pid = start_api(api, env, 1, workdir)
                print("one API process (parley serve):")
                asyncio.run(idle_connections(base, pid, idle_senders, args.idle))


if __name__ == "__main__":
    main()
