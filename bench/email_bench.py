"""Notification email benchmark: notification emails per second into a local SMTP sink with two
worker processes.

    .venv/bin/python bench/email_bench.py                        # 10,000 recipients
    .venv/bin/python bench/email_bench.py --recipients 1000

Everything on 127.0.0.1 and removed afterwards: a private PostgreSQL database, a private
redis-server (the broker), an aiosmtpd sink in this process, and two Celery workers
(`parley worker --concurrency 1`, twice) with PARLEY_SMTP_URL pointing at the sink. Each of
--recipients users has a conversation with one sender and a burst of --burst unread messages, and
the window the consumer would have opened for it has just ended (the rows are written in bulk, as
the `email.notify` consumer writes them). Then one `parley.email_sweep` is sent per worker and
the clock runs until the sink holds one email per recipient. Printed: emails/s. Never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from parley.config import load_settings  # noqa: E402
from parley.db import create_sync_db_engine  # noqa: E402
from parley.ids import new_id  # noqa: E402
from parley.migrate import upgrade_to_head  # noqa: E402
from parley.models import Conversation, ConversationMember, EmailThread, Message, User, utcnow  # noqa: E402
from tests.conftest import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.email.smtp_sink import SmtpSink  # noqa: E402
from tests.workers.conftest import Processes, RedisServer, wait_for_worker  # noqa: E402
from workers.celery_app import create_celery_app  # noqa: E402
from workers.email_tasks import EMAIL_QUEUE, SWEEP_TASK  # noqa: E402


def seed(url: str, recipients: int, burst: int) -> None:
    engine = create_sync_db_engine(load_settings(database_url=url))
    now = utcnow()
    sender = {"id": new_id(), "username": "alice", "name": "Alice", "email": "alice@example.com", "kind": "user",
              "created_at": now, "inbox_notifications": True, "order_updates_notifications": True,
              "email_digest": "daily"}
    with engine.begin() as connection:
        connection.execute(insert(User), [sender])
        for start in range(0, recipients, 1000):
            users, conversations, members, messages, threads = [], [], [], [], []
            for n in range(start, min(start + 1000, recipients)):
                user_id, conversation_id = new_id(), new_id()
                users.append({**sender, "id": user_id, "username": f"user{n}", "name": f"User {n}",
                              "email": f"user{n}@example.com"})
                conversations.append({"id": conversation_id, "pair_key": Conversation.pair_key_for(sender["id"], user_id),
                                      "initiator_id": sender["id"], "recipient_id": user_id, "created_at": now,
                                      "updated_at": now})
                members += [{"conversation_id": conversation_id, "user_id": u} for u in (sender["id"], user_id)]
                messages += [{"id": new_id(), "conversation_id": conversation_id, "sender_id": sender["id"],
                              "content": f"message {m} of a burst", "created_at": now, "updated_at": now,
                              "source": "api"} for m in range(burst)]
                threads.append({"user_id": user_id, "conversation_id": conversation_id, "due_at": now,
                                "created_at": now})
            connection.execute(insert(User), users)
            connection.execute(insert(Conversation), conversations)
            connection.execute(insert(ConversationMember), members)
            connection.execute(insert(Message), messages)
            connection.execute(insert(EmailThread), threads)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="email-bench-"))
    url = create_postgres_database("parley_email_bench")
    redis_server = RedisServer(directory)
    sink = SmtpSink()
    processes = Processes(directory)
    try:
        upgrade_to_head(load_settings(database_url=url))
        redis_server.start()
        sink.start()
        seed(url, args.recipients, args.burst)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(PARLEY_DATABASE_URL=url, PARLEY_BROKER_URL=redis_server.url, PARLEY_SMTP_URL=sink.url,
                   PARLEY_SECRET_KEY="bench-secret-key-0123456789-0123456789", PARLEY_LOG_LEVEL="WARNING",
                   PARLEY_EMAIL_REPLY_DOMAIN="reply.parley.test", PYTHONPATH=str(ROOT))
        workers = [processes.start("worker", [sys.executable, "-m", "parley.cli", "worker", "--concurrency", "1",
                                              "--hostname", f"bench{n}@%h", "-l", "INFO"], env) for n in range(2)]
        for worker in workers:
            wait_for_worker(worker, timeout=60)
        app = create_celery_app(load_settings(database_url=url, broker_url=redis_server.url))
        started = time.monotonic()
        for _ in range(args.recipients // 500 + 2):  # each sweep takes up to 500 due windows
            app.send_task(SWEEP_TASK, queue=EMAIL_QUEUE)
        while len(sink.received) < args.recipients:
            if time.monotonic() - started > 1800:
                raise SystemExit(f"timed out with {len(sink.received)} emails")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        print(f"{args.recipients} notification emails ({args.burst} messages each) in {elapsed:.1f} s: "
              f"{args.recipients / elapsed:.0f} emails/s with two workers")
    finally:
        processes.stop_all()
        sink.stop()
        redis_server.stop()
        drop_postgres_database(url)


if __name__ == "__main__":
    main()
