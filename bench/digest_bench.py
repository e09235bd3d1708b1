"""Digest benchmark: one full due-digest sweep with two worker processes into a local SMTP sink.

    .venv/bin/python bench/digest_bench.py                       # 100,000 users, 10% with unread
    .venv/bin/python bench/digest_bench.py --users 20000
    .venv/bin/python bench/digest_bench.py --parse              # the sink parses every email too

Everything on 127.0.0.1 and removed afterwards: a private PostgreSQL database, a private
redis-server (the broker), an aiosmtpd sink in this process (counting; --parse: parsing each email), and two Celery workers
(`parley worker --concurrency 1`, twice) with PARLEY_SMTP_URL pointing at the sink. Each of --users
users has a conversation with alice; --unread-share of them (10%) have 3 unread messages from alice
and 1 from carol (two conversations), the others only read messages. Every user's digest is due
(next_digest_at a minute ago). Then one `parley.digest_sweep` is sent and the clock runs until the
sink holds one digest per user with unread messages and no user is due any more (everyone
rescheduled). Printed: the sweep's wall time and digests/s. Never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from parley.config import load_settings  # noqa: E402
from parley.db import create_sync_db_engine  # noqa: E402
from parley.ids import new_id  # noqa: E402
from parley.migrate import upgrade_to_head  # noqa: E402
from parley.models import Conversation, ConversationMember, Message, User, utcnow  # noqa: E402
from tests.conftest import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.email.smtp_sink import SmtpSink  # noqa: E402
from tests.workers.conftest import free_port  # noqa: E402
from tests.workers.conftest import Processes, RedisServer, wait_for_worker  # noqa: E402
from workers.celery_app import create_celery_app  # noqa: E402
from workers.digest_tasks import DIGEST_SWEEP_TASK  # noqa: E402
from workers.email_tasks import EMAIL_QUEUE  # noqa: E402

CHUNK = 2000


class CountingSink:
    """An SMTP sink that only counts (and checks each digest's subject line is there): parsing every
    email in this process, as tests/email/smtp_sink does, would take CPU from the two workers on a
    2-core machine. --parse uses that parsing sink instead."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.count = 0
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        if b"\nSubject: Your daily Parley digest" in (envelope.original_content or b""):  # type: ignore[attr-defined]
            self.count += 1
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def received(self) -> range:
        return range(self.count)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def seed(url: str, users: int, unread_share: float) -> int:
    engine = create_sync_db_engine(load_settings(database_url=url))
    now = utcnow()
    due = now - timedelta(minutes=1)
    base = {"kind": "user", "created_at": now, "inbox_notifications": True, "order_updates_notifications": True,
            "email_digest": "daily", "timezone": "UTC", "digest_hour": 8, "digest_weekday": "monday"}
    alice = {**base, "id": new_id(), "username": "alice", "name": "Alice", "email": "alice@example.com",
             "avatar_url": "https://img.example.com/alice.png", "next_digest_at": None}
    carol = {**alice, "id": new_id(), "username": "carol", "name": "Carol", "email": "carol@example.com"}
    every = max(1, round(1 / unread_share)) if unread_share > 0 else 0
    with_unread = 0
    with engine.begin() as connection:
        connection.execute(insert(User), [alice, carol])
        for start in range(0, users, CHUNK):
            rows, conversations, members, messages = [], [], [], []
            for n in range(start, min(start + CHUNK, users)):
                user_id = new_id()
                rows.append({**base, "id": user_id, "username": f"user{n}", "name": f"User {n}",
                             "email": f"user{n}@example.com", "avatar_url": None, "next_digest_at": due})
                unread = every and n % every == 0
                with_unread += bool(unread)
                for sender, count in ((alice, 3), (carol, 1)) if unread else ((alice, 0),):
                    conversation_id = new_id()
                    conversations.append({"id": conversation_id, "pair_key": Conversation.pair_key_for(sender["id"], user_id),
                                          "initiator_id": sender["id"], "recipient_id": user_id, "created_at": now,
                                          "updated_at": now})
                    members += [{"conversation_id": conversation_id, "user_id": u} for u in (sender["id"], user_id)]
                    messages.append({"id": new_id(), "conversation_id": conversation_id, "sender_id": sender["id"],
                                     "content": "an old message, read", "created_at": now, "updated_at": now,
                                     "read_at": now, "source": "api"})
                    messages += [{"id": new_id(), "conversation_id": conversation_id, "sender_id": sender["id"],
                                  "content": f"unread message {m}: " + "lorem ipsum " * 10, "created_at": now,
                                  "updated_at": now, "read_at": None, "source": "api"} for m in range(count)]
            connection.execute(insert(User), rows)
            connection.execute(insert(Conversation), conversations)
            connection.execute(insert(ConversationMember), members)
            connection.execute(insert(Message), messages)
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return with_unread


def due_count(url: str) -> int:
    engine = create_sync_db_engine(load_settings(database_url=url))
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(User).where(User.next_digest_at <= utcnow())))
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--unread-share", type=float, default=0.10)
    parser.add_argument("--parse", action="store_true", help="Parse every email in the sink (costs this process CPU).")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    url = create_postgres_database("parley_digest_bench")
    redis_server = RedisServer(directory)
    sink: SmtpSink | CountingSink = SmtpSink() if args.parse else CountingSink()
    processes = Processes(directory)
    try:
        upgrade_to_head(load_settings(database_url=url))
        redis_server.start()
        sink.start()
        seeded = time.monotonic()
        expected = seed(url, args.users, args.unread_share)
        print(f"seeded {args.users} users ({expected} with unread messages) in {time.monotonic() - seeded:.1f} s")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(PARLEY_DATABASE_URL=url, PARLEY_BROKER_URL=redis_server.url, PARLEY_SMTP_URL=sink.url,
                   PARLEY_SECRET_KEY="bench-secret-key-0123456789-0123456789", PARLEY_LOG_LEVEL="WARNING",
                   PARLEY_CONVERSATION_URL_TEMPLATE="https://app.example.com/inbox/{conversation_id}",
                   PYTHONPATH=str(ROOT))
        workers = [processes.start("worker", [sys.executable, "-m", "parley.cli", "worker", "--concurrency", "1",
                                              "--hostname", f"bench{n}@%h", "-l", "INFO"], env) for n in range(2)]
        for worker in workers:
            wait_for_worker(worker, timeout=60)
        app = create_celery_app(load_settings(database_url=url, broker_url=redis_server.url))
        started = time.monotonic()
        app.send_task(DIGEST_SWEEP_TASK, queue=EMAIL_QUEUE)
        while len(sink.received) < expected:
            if time.monotonic() - started > 1800:
                raise SystemExit(f"timed out with {len(sink.received)} digests")
            time.sleep(0.05)
        delivered = time.monotonic() - started
        while (left := due_count(url)) > 0:
            if time.monotonic() - started > 1800:
                raise SystemExit(f"timed out with {left} users still due")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        print(f"one sweep of {args.users} due users: {len(sink.received)} digests delivered in {delivered:.1f} s, "
              f"every user rescheduled in {elapsed:.1f} s ({expected / delivered:.0f} digests/s, two workers)")
    finally:
        processes.stop_all()
        sink.stop()
        redis_server.stop()
        drop_postgres_database(url)


if __name__ == "__main__":
    main()
