"""Media benchmark: JPEG uploads over HTTP, processed by two Celery worker processes.

    .venv/bin/python bench/media_bench.py                     # 200 uploads at 10/s, then a burst of 100
    .venv/bin/python bench/media_bench.py --uploads 400 --rate 20 --burst 0

What it does, all on 127.0.0.1 and all cleaned up afterwards:
1. Creates a private PostgreSQL database and starts a private redis-server (as events_bench.py).
2. Starts the API (`parley serve` equivalent), beat, and one Celery worker with two processes
   (`parley worker --concurrency 2`) on local storage in a temporary directory.
3. Makes a set of distinct 2-4 MP JPEGs (noise and gradients, so they compress like photos).
4. Paced phase: uploads --uploads images at --rate a second (open loop: each starts on schedule,
   whatever the previous did) and reports the rate achieved, the upload response time, and the
   time from each upload's commit to its `ready` (the row's created_at to processed_at, both taken
   inside their transactions): median, p95, p99, max.
5. Burst phase: --burst uploads from --concurrency clients as fast as they go, for the upload
   throughput the API sustains (uploads/s and MB/s); processing then drains.

Figures are printed, never asserted. The target on a 2-core machine is p99 time-to-ready under 2 s
at 10 uploads/s; the HTTP client, the API, PostgreSQL, Redis and both workers share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from PIL import Image
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from events_bench import (  # noqa: E402  (a sibling script, not a package)
    API_PROCESS,
    ROOT,
    child,
    free_port,
    percentile,
    private_database,
    private_redis,
    wait_for,
    wait_for_api,
)

from parley.config import load_settings  # noqa: E402
from parley.db import async_session_factory, create_async_db_engine, create_sync_db_engine  # noqa: E402
from parley.migrate import upgrade_to_head  # noqa: E402
from parley.models import Attachment, AttachmentStatus, ConsumerReceipt, Event  # noqa: E402
from parley.services.tokens import create_token  # noqa: E402
from parley.services.users import NewUser, create_user  # noqa: E402

SIZES = ((1920, 1080), (2048, 1536), (2304, 1728))  # 2.1, 3.1 and 4.0 MP
READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 600.0


def make_jpegs(count: int, orientation: int = 1) -> list[bytes]:
    """Distinct photos; an `orientation` other than 1 (6: shot in portrait) is written into their
    EXIF with GPS coordinates, as phones do, and makes processing rotate and re-encode them."""
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
        exif[0x8825] = {1: "N", 2: (51.0, 30.0, 12.5), 3: "W", 4: (0.0, 7.0, 40.1)}
    images = []
    for n in range(count):
        width, height = SIZES[n % len(SIZES)]
        noise = Image.effect_noise((width, height), 40 + n).convert("RGB")
        gradient = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        photo = Image.blend(noise, gradient, 0.5)
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=85, exif=exif)
        images.append(buffer.getvalue())
    return images


async def make_uploader(database_url: str) -> dict[str, str]:
    settings = load_settings(database_url=database_url)
    engine = create_async_db_engine(settings)
    try:
        async with async_session_factory(engine)() as session:
            user = await session.run_sync(create_user, NewUser(username="uploader", name="Uploader"))
            token = await session.run_sync(create_token, user.id, "bench")
    finally:
        await engine.dispose()
    return {"Authorization": f"Bearer {token.secret}"}


@dataclass
class Upload:
    started: float
    seconds: float
    attachment_id: str


async def upload_one(http: aiohttp.ClientSession, base: str, auth: dict[str, str], data: bytes, n: int) -> Upload:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=f"photo-{n}.jpg", content_type="image/jpeg")
    started = time.perf_counter()
    async with http.post(f"{base}/api/v1/attachments", data=form, headers=auth) as response:
        body = await response.json()
        if response.status != 201:
            raise SystemExit(f"upload {n} failed: {response.status} {body}")
    return Upload(started, time.perf_counter() - started, body["id"])


async def paced(
    base: str, auth: dict[str, str], images: list[bytes], count: int, rate: float
) -> tuple[list[Upload], float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        began = time.perf_counter()

        async def scheduled(n: int) -> Upload:
            await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            return await upload_one(http, base, auth, images[n % len(images)], n)

        uploads = await asyncio.gather(*(scheduled(n) for n in range(count)))
        return list(uploads), time.perf_counter() - began


async def burst(
    base: str, auth: dict[str, str], images: list[bytes], count: int, concurrency: int
) -> tuple[float, int]:
    next_index = 0
    sent_bytes = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal next_index, sent_bytes
        while next_index < count:
            n = next_index
            next_index += 1
            data = images[n % len(images)]
            await upload_one(http, base, auth, data, n)
            sent_bytes += len(data)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return time.perf_counter() - began, sent_bytes


def unfinished(engine, ids: list[str]) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(
            connection.scalar(
                select(func.count())
                .select_from(Attachment)
                .where(Attachment.id.in_(ids), Attachment.status == AttachmentStatus.PROCESSING)
            )
            or 0
        )


def ready_ms(engine, ids: list[str]) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        rows = connection.execute(
            select(Attachment.status, Attachment.created_at, Attachment.processed_at).where(Attachment.id.in_(ids))
        ).all()
    failed = sum(1 for r in rows if r.status != AttachmentStatus.READY)
    return [(r.processed_at - r.created_at).total_seconds() * 1000 for r in rows if r.processed_at], failed


def handoff_ms(engine, after_event_id: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """For each attachment.uploaded event: insert -> dispatched, and insert -> the media consumer
    handed it to a processing task (its receipt)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(Event.created_at, Event.dispatched_at, ConsumerReceipt.finished_at)
            .join(ConsumerReceipt, ConsumerReceipt.event_id == Event.id)
            .where(
                Event.type == "attachment.uploaded",
                Event.id > after_event_id,
                ConsumerReceipt.consumer == "media.process",
            )
        ).all()
    return (
        [(r.dispatched_at - r.created_at).total_seconds() * 1000 for r in rows],
        [(r.finished_at - r.created_at).total_seconds() * 1000 for r in rows],
    )


def last_event_id(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)


def describe(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.0f} ms, p95 {percentile(values, 0.95):.0f} ms, "
        f"p99 {percentile(values, 0.99):.0f} ms, max {max(values):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="paced uploads per second")
    parser.add_argument("--burst", type=int, default=100, help="uploads in the burst phase (0: none)")
    parser.add_argument("--concurrency", type=int, default=8, help="burst clients")
    parser.add_argument("--distinct-images", type=int, default=12)
    parser.add_argument("--orientation", type=int, default=1, choices=range(1, 9),
                        help="EXIF orientation of the photos: 1 upright (metadata cut losslessly), "
                        "6 portrait (rotated and re-encoded)")
    parser.add_argument("--log-level", default="WARNING", help="INFO logs each processing's duration")
    parser.add_argument("--keep-logs", action="store_true", help="copy the logs to ./media-bench-logs")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-media-bench-")))
        database_url = stack.enter_context(private_database(args.postgres_admin_url))
        broker_url = stack.enter_context(private_redis(directory))
        settings = load_settings(database_url=database_url)
        upgrade_to_head(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            PARLEY_DATABASE_URL=database_url,
            PARLEY_BROKER_URL=broker_url,
            PARLEY_STORAGE_PATH=str(directory / "storage"),
            PARLEY_LOG_LEVEL=args.log_level,
            PYTHONPATH=str(ROOT),
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        stack.enter_context(child([sys.executable, "-c", API_PROCESS, str(port)], env, directory / "api.log"))
        stack.enter_context(
            child([sys.executable, "-m", "parley.cli", "worker", "--concurrency", "2"], env, directory / "worker.log")
        )
        stack.enter_context(child([sys.executable, "-m", "parley.cli", "beat"], env, directory / "beat.log"))

        wait_for_api(base)
        print(f"logs in {directory}", flush=True)
        print(f"making {args.distinct_images} distinct 2-4 MP JPEGs ...", flush=True)
        images = make_jpegs(args.distinct_images, args.orientation)
        print(f"  sizes {min(map(len, images)) // 1024}-{max(map(len, images)) // 1024} KiB", flush=True)
        auth = asyncio.run(make_uploader(database_url))
        engine = create_sync_db_engine(settings)
        # Warm-up, which also waits for the worker (it logs at WARNING, so not its " ready."):
        # one upload per worker process, processed.
        warm, _ = asyncio.run(paced(base, auth, images, 2, 10.0))
        wait_for(lambda: unfinished(engine, [u.attachment_id for u in warm]) == 0, "the warm-up", READY_TIMEOUT)

        before = last_event_id(engine)
        uploads, elapsed = asyncio.run(paced(base, auth, images, args.uploads, args.rate))
        ids = [u.attachment_id for u in uploads]
        wait_for(lambda: unfinished(engine, ids) == 0, "processing to finish", DRAIN_TIMEOUT)
        to_ready, failed = ready_ms(engine, ids)
        print(
            f"paced: {args.uploads} uploads at {args.rate:g}/s target -> {args.uploads / elapsed:.1f} uploads/s achieved"
        )
        print(f"  upload response: {describe([u.seconds * 1000 for u in uploads])}")
        dispatched, handed = handoff_ms(engine, before)
        print(f"  upload commit -> event dispatched: {describe(dispatched)}")
        print(f"  upload commit -> processing task sent (media consumer): {describe(handed)}")
        print(f"  upload commit -> ready: {describe(to_ready)}  ({failed} not ready)")

        if args.burst:
            seconds, sent = asyncio.run(burst(base, auth, images, args.burst, args.concurrency))
            print(
                f"burst: {args.burst} uploads from {args.concurrency} clients in {seconds:.1f} s -> "
                f"{args.burst / seconds:.1f} uploads/s, {sent / seconds / 1_048_576:.1f} MiB/s"
            )
            started = time.perf_counter()
            with engine.connect() as connection:
                pending = list(
                    connection.scalars(select(Attachment.id).where(Attachment.status == AttachmentStatus.PROCESSING))
                )
            wait_for(lambda: unfinished(engine, pending) == 0, "the burst's processing", DRAIN_TIMEOUT)
            print(f"  its processing backlog drained {time.perf_counter() - started:.1f} s after the last upload")
        engine.dispose()
        if args.keep_logs:
            kept = Path("media-bench-logs")
            kept.mkdir(exist_ok=True)
            for log in directory.glob("*.log"):
                shutil.copy(log, kept / log.name)


if __name__ == "__main__":
    main()
