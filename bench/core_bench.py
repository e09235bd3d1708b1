"""Core benchmark: seed PostgreSQL in bulk, then time history, inbox and send over real HTTP.

    .venv/bin/python bench/core_bench.py                  # full size: ~1-2 min seed, ~1 min run
    .venv/bin/python bench/core_bench.py --skip-seed      # reuse the seeded database
    .venv/bin/python bench/core_bench.py --users 200 --conversations 5000 --messages 50000 \
        --heavy-conversations 1000 --long-messages 1000   # quick smoke run

What it does:
1. Drops and recreates the database named by --database-url (its name must contain "bench"),
   runs the Alembic migrations and bulk-loads users, conversations, members and messages with
   COPY. ULIDs are made in bulk here, timestamped like the rows they name, so a conversation's
   message ids rise with created_at exactly as the app's own ids do.
2. Mints API tokens through parley.services.tokens.create_token.
3. Starts the API as a separate process (`parley serve`, or N reuse_port workers) so the load
   generator does not share the server's event loop, and times with aiohttp:
     history  GET /api/v1/conversations/{id}/messages?limit=50 (latest page, and walking back with before=)
     inbox    GET /api/v1/conversations?limit=50 for a user with --heavy-conversations conversations
     send     POST /api/v1/conversations/{id}/messages from 10 concurrent clients (closed loop)
4. Optionally (default on) times the same service functions in-process without HTTP, and with
   --explain prints EXPLAIN (ANALYZE, BUFFERS) of every SELECT the inbox and history pages run.

The issue asks for 1,000 users and one user with 5,000 conversations; as conversations are 1:1
and unique per pair, that user needs 5,000 distinct partners, so the seed adds the missing
partners as extra "bench-x…" users who talk only to the heavy user (4,001 at default sizes).
The other conversations are distinct random pairs among the 1,000 regular users.

Every loop is bounded by a count, and nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import heapq
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg import sql
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.config import Settings, load_settings
from parley.db import async_session_factory, create_async_db_engine
from parley.migrate import upgrade_to_head
from parley.models import Conversation, ConversationMember, Message, User
from parley.services.conversations import list_inbox
from parley.services.messages import MessageDraft, list_history, send_message
from parley.services.tokens import create_token

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/parley_bench"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
PAGE = 50
SEND_CLIENTS = 10
# The targets, printed beside the figures (nothing fails on them).
READ_P99_TARGET_MS = 20.0
SEND_P99_TARGET_MS = 50.0
SEND_RATE_TARGET = 1_000.0
SEED = 20_26_11_21  # fixed, so two full-size seeds are the same data

HEAVY_USERNAME = "bench-heavy"
REGULAR_PREFIX = "bench-u"  # bench-u0001 … : the regular population (the heavy user is one of them)
EXTRA_PREFIX = "bench-x"  # partners added only so the heavy user can have enough distinct pairs

DAY_MS = 86_400_000
SEED_SPAN_DAYS = 365
# Seeded activity ends this long before the run, so ids minted by the running app (now) sort after
# every seeded id, as they would in production.
SEED_END_LAG_MS = 60_000

SENTENCES = (
    "Is this still available? I could pick it up on Saturday morning.",
    "Yes, still available. Saturday works, anytime after ten.",
    "Great, could you do 40 instead of 45?",
    "Let us say 42 and it is yours.",
    "Deal. Which entrance of the building should I use?",
    "The side door on Elm Street; ring the second bell.",
    "Thanks! See you then.",
    "Sorry, running about ten minutes late.",
    "No problem at all, take your time.",
    "Could you send a couple more photos of the back?",
)

# ULIDs in bulk: base64's C encoder does the 5-bit grouping, translate() maps the RFC 4648
# alphabet onto Crockford's. 20 bytes = 160 bits = 32 characters, the first 6 of which cover the
# 30 leading zero bits above the 130 bits a 26-character ULID spells.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def ulid_at(ms: int, rng: random.Random) -> str:
    value = (ms << 80) | rng.getrandbits(80)
    return base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# --------------------------------------------------------------------------------------------
# Database administration
# --------------------------------------------------------------------------------------------


def libpq_url(database_url: str, database: str | None = None) -> str:
    """The SQLAlchemy URL as a plain postgresql:// URL psycopg takes (driver suffix dropped)."""
    url = make_url(database_url.replace("postgres://", "postgresql://", 1)).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def check_database_url(database_url: str, *, will_drop: bool) -> str:
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    if url.get_backend_name() != "postgresql":
        raise SystemExit("--database-url must be a postgresql:// URL")
    if url.host not in LOCAL_HOSTS:
        raise SystemExit(f"the benchmark only talks to 127.0.0.1, not {url.host!r}")
    if not url.database:
        raise SystemExit("--database-url must name a database")
    # A guard against pointing the drop-and-recreate at a database someone cares about.
    if will_drop and "bench" not in url.database:
        raise SystemExit(f"refusing to drop {url.database!r}: the benchmark database's name must contain 'bench'")
    return url.database


def recreate_database(database_url: str, name: str) -> None:
    with psycopg.connect(libpq_url(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    users: int
    conversations: int
    messages: int
    heavy_conversations: int
    long_messages: int

    def check(self) -> None:
        if self.users < SEND_CLIENTS + 2:
            raise SystemExit(f"--users must be at least {SEND_CLIENTS + 2}")
        if not 1 <= self.heavy_conversations <= self.conversations:
            raise SystemExit("--heavy-conversations must be between 1 and --conversations")
        others = self.conversations - self.heavy_conversations
        if others > (self.users - 1) * (self.users - 2) // 2:
            raise SystemExit("too many conversations for that many users: every pair talks at most once")
        if self.messages < self.conversations - 1 + self.long_messages:
            raise SystemExit("--messages must give every conversation one message, plus --long-messages")


@dataclass
class SeedUser:
    id: str
    username: str


@dataclass
class PlannedConversation:
    id: str
    initiator: str
    recipient: str
    message_ms: list[int]
    message_ids: list[str]
    # The last `unread_tail` messages were all sent by `tail_sender` and the other member has not
    # read them yet (read_at NULL), which is what an unread badge counts.
    unread_tail: int
    tail_sender: str

    @property
    def pair_key(self) -> str:
        key: str = Conversation.pair_key_for(self.initiator, self.recipient)
        return key


@dataclass
class SeedPlan:
    users: list[SeedUser]
    conversations: list[PlannedConversation]


def plan_seed(sizes: Sizes, now_ms: int) -> SeedPlan:
    """Decide every row (except message content and senders, drawn while writing) up front, so
    conversations and members can be written, with their final updated_at and read markers,
    before the messages that reference them."""
    rng = random.Random(SEED)
    start_ms = now_ms - SEED_SPAN_DAYS * DAY_MS
    end_ms = now_ms - SEED_END_LAG_MS

    regular = [SeedUser(ulid_at(start_ms - DAY_MS + i, rng), f"{REGULAR_PREFIX}{i:04d}") for i in range(1, sizes.users)]
    heavy = SeedUser(ulid_at(start_ms - 2 * DAY_MS, rng), HEAVY_USERNAME)
    extra_count = max(0, sizes.heavy_conversations - len(regular))
    extras = [SeedUser(ulid_at(start_ms - DAY_MS + i, rng), f"{EXTRA_PREFIX}{i:04d}") for i in range(1, extra_count + 1)]

    pairs: list[tuple[SeedUser, SeedUser]] = [(heavy, other) for other in (regular + extras)[: sizes.heavy_conversations]]
    pairs.extend(_distinct_pairs(regular, sizes.conversations - sizes.heavy_conversations, rng))

    # One message each, the long conversation (heavy with bench-u0001, pairs[0]) its share, and
    # the rest spread with a heavy tail: most conversations are short, a few run to hundreds.
    counts = [1] * len(pairs)
    counts[0] = sizes.long_messages
    spare = sizes.messages - sum(counts)
    weights = [0.0] + [rng.paretovariate(2.0) for _ in range(len(pairs) - 1)]
    total_weight = sum(weights)
    for i, w in enumerate(weights):
        counts[i] += int(spare * w / total_weight)
    for i in rng.choices(range(len(pairs)), weights=weights, k=sizes.messages - sum(counts)):
        counts[i] += 1

    conversations = []
    for (a, b), count in zip(pairs, counts, strict=True):
        initiator, recipient = (a, b) if rng.random() < 0.5 else (b, a)
        # Long conversations start earlier, so their messages are not crammed into a day.
        latest_start = end_ms - max(count, 1) * 60_000
        created = rng.randint(start_ms, max(start_ms, latest_start))
        stamps = sorted(rng.randint(created, end_ms) for _ in range(count - 1))
        stamps.insert(0, created)  # the first message opens the conversation
        for k in range(1, count):  # strictly increasing, so ids order exactly as created_at
            if stamps[k] <= stamps[k - 1]:
                stamps[k] = stamps[k - 1] + 1
        unread = 0 if rng.random() < 0.7 else rng.randint(1, min(5, count))
        conversations.append(
            PlannedConversation(
                id=ulid_at(created, rng),
                initiator=initiator.id,
                recipient=recipient.id,
                message_ms=stamps,
                message_ids=[ulid_at(ms, rng) for ms in stamps],
                unread_tail=unread,
                tail_sender=rng.choice((initiator.id, recipient.id)),
            )
        )
    conversations.sort(key=lambda c: c.id)  # written in creation order, as they would have been
    return SeedPlan(users=[heavy, *regular, *extras], conversations=conversations)


def _distinct_pairs(users: Sequence[SeedUser], count: int, rng: random.Random) -> list[tuple[SeedUser, SeedUser]]:
    possible = len(users) * (len(users) - 1) // 2
    if count * 2 > possible:  # dense: enumerate and sample, rejection would crawl
        every = [(i, j) for i in range(len(users)) for j in range(i + 1, len(users))]
        return [(users[i], users[j]) for i, j in rng.sample(every, count)]
    chosen: set[tuple[int, int]] = set()
    for _ in range(count * 20):  # bounded; at under half density it needs ~1.5 tries per pair
        if len(chosen) == count:
            break
        i, j = rng.sample(range(len(users)), 2)
        chosen.add((min(i, j), max(i, j)))
    if len(chosen) < count:
        raise RuntimeError("could not draw enough distinct pairs")
    return [(users[i], users[j]) for i, j in sorted(chosen)]


def _copy(cur: psycopg.Cursor[Any], table: str, columns: str, lines: Iterable[str], chunk_rows: int = 20_000) -> int:
    """COPY text-format lines into `table`, written in chunks so memory stays flat. FREEZE is
    allowed because the tables were truncated in this same transaction; it spares the later
    VACUUM from rewriting every page to set hint bits."""
    rows = 0
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FREEZE)") as copy:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= chunk_rows:
                copy.write("".join(batch))
                rows += len(batch)
                batch.clear()
        if batch:
            copy.write("".join(batch))
            rows += len(batch)
    return rows


def _user_lines(plan: SeedPlan, now_ms: int) -> Iterator[str]:
    created = iso(now_ms - (SEED_SPAN_DAYS + 2) * DAY_MS)
    for user in plan.users:
        number = user.username.rsplit("-", 1)[1]
        yield f"{user.id}\t{user.username}\tBench {number}\t{user.username}@bench.invalid\t\\N\tuser\t{created}\tt\tt\tdaily\n"


def _conversation_lines(plan: SeedPlan) -> Iterator[str]:
    for c in plan.conversations:
        yield f"{c.id}\t{c.pair_key}\t{c.initiator}\t{c.recipient}\t{iso(c.message_ms[0])}\t{iso(c.message_ms[-1])}\n"


def _member_lines(plan: SeedPlan) -> Iterator[str]:
    for c in plan.conversations:
        last = len(c.message_ids) - 1
        for member in (c.initiator, c.recipient):
            # The member the unread tail is waiting for has read up to just before it.
            upto = last - c.unread_tail if member != c.tail_sender else last
            if upto < 0:
                yield f"{c.id}\t{member}\t\\N\t\\N\n"
            else:
                yield f"{c.id}\t{member}\t{c.message_ids[upto]}\t{iso(c.message_ms[upto])}\n"


def _message_lines(plan: SeedPlan, end_ms: int) -> Iterator[str]:
    """Every message, in id (= time) order across all conversations: the table's physical layout
    is then the one months of real traffic leave, each conversation's messages scattered over the
    heap, rather than one conversation's history packed into a few pages by a per-conversation
    load, which would flatter the history query."""
    rng = random.Random(SEED + 1)
    streams = (_conversation_messages(c, rng, end_ms) for c in plan.conversations)
    for _, line in heapq.merge(*streams):
        yield line


def _conversation_messages(c: PlannedConversation, rng: random.Random, end_ms: int) -> Iterator[tuple[str, str]]:
    members = (c.initiator, c.recipient)
    count = len(c.message_ids)
    first_unread = count - c.unread_tail
    for k in range(count):
        ms = c.message_ms[k]
        stamp = iso(ms)
        if k >= first_unread:
            sender, read_at = c.tail_sender, "\\N"
        else:
            sender = members[rng.getrandbits(1)]
            read_at = iso(min(ms + rng.randint(1_000, 600_000), end_ms))
        content = f"{SENTENCES[rng.randrange(len(SENTENCES))]} (#{k + 1})"
        line = f"{c.message_ids[k]}\t{c.id}\t{sender}\t{content}\t{stamp}\t{stamp}\t\\N\t{read_at}\t\\N\tapi\n"
        yield c.message_ids[k], line


def seed(database_url: str, sizes: Sizes) -> None:
    started = time.perf_counter()
    now_ms = time.time_ns() // 1_000_000
    plan = plan_seed(sizes, now_ms)
    planned = time.perf_counter()
    print(f"  planned {len(plan.users):,} users, {len(plan.conversations):,} conversations in {planned - started:.1f} s")

    with psycopg.connect(libpq_url(database_url)) as conn, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '256MB'")
        superuser = cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if superuser and superuser[0]:
            # Rows are consistent by construction, so skip the per-row foreign key triggers
            # (2 lookups per message). Indexes and unique constraints are still enforced.
            cur.execute("SET session_replication_role = replica")
        # The database is new, so this empties nothing: it is what lets COPY use FREEZE. CASCADE
        # takes along whatever other tables reference these (tokens, attachments, later ones).
        cur.execute("TRUNCATE users, conversations, conversation_members, messages CASCADE")
        n_users = _copy(
            cur, "users",
            "id, username, name, email, avatar_url, kind, created_at, inbox_notifications, "
            "order_updates_notifications, email_digest",
            _user_lines(plan, now_ms),
        )
        n_conv = _copy(cur, "conversations", "id, pair_key, initiator_id, recipient_id, created_at, updated_at",
                       _conversation_lines(plan))
        n_members = _copy(cur, "conversation_members", "conversation_id, user_id, last_read_message_id, last_read_at",
                          _member_lines(plan))
        n_msg = _copy(
            cur, "messages",
            "id, conversation_id, sender_id, content, created_at, updated_at, deleted_at, read_at, client_id, source",
            _message_lines(plan, now_ms - SEED_END_LAG_MS),
        )
        conn.commit()
    loaded = time.perf_counter()
    print(f"  copied {n_users:,} users, {n_conv:,} conversations, {n_members:,} members, {n_msg:,} messages "
          f"in {loaded - planned:.1f} s")

    # VACUUM sets the visibility map (index-only scans need it) and ANALYZE gives the planner
    # real statistics; without them the first plans are made for empty tables.
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("VACUUM (ANALYZE)")
    print(f"  VACUUM (ANALYZE) in {time.perf_counter() - loaded:.1f} s")
    print(f"seeded in {time.perf_counter() - started:.1f} s")


# --------------------------------------------------------------------------------------------
# The fixture the measurements use, found by name so --skip-seed works on an earlier seed
# --------------------------------------------------------------------------------------------


@dataclass
class Fixture:
    heavy_id: str
    long_conversation_id: str
    long_conversation_messages: int
    heavy_conversations: int
    sender_ids: list[str]
    # Per sender: conversations to send into (never the heavy user's, so history and inbox pages
    # stay the same from run to run).
    send_targets: dict[str, list[str]]
    tokens: dict[str, str] = field(default_factory=dict)


async def load_fixture(sessions: async_sessionmaker[AsyncSession], targets_per_sender: int) -> Fixture:
    async with sessions() as session, session.begin():
        ids: dict[str, str] = dict(
            (await session.execute(
                select(User.username, User.id).where(
                    User.username.in_([HEAVY_USERNAME] + [f"{REGULAR_PREFIX}{i:04d}" for i in range(1, SEND_CLIENTS + 2)])
                )
            )).all()
        )
        if HEAVY_USERNAME not in ids or len(ids) < SEND_CLIENTS + 2:
            raise SystemExit("the database is not seeded by this script (run without --skip-seed)")
        heavy = ids[HEAVY_USERNAME]
        long_id = await session.scalar(
            select(Conversation.id).where(Conversation.pair_key == Conversation.pair_key_for(heavy, ids[f"{REGULAR_PREFIX}0001"]))
        )
        if long_id is None:
            raise SystemExit("the heavy user's long conversation is missing: reseed (run without --skip-seed)")
        long_count = int(await session.scalar(select(func.count()).where(Message.conversation_id == long_id)) or 0)
        heavy_count = int(await session.scalar(
            select(func.count()).select_from(ConversationMember).where(ConversationMember.user_id == heavy)
        ) or 0)
        senders = [ids[f"{REGULAR_PREFIX}{i:04d}"] for i in range(2, SEND_CLIENTS + 2)]
        targets: dict[str, list[str]] = {}
        for sender in senders:
            targets[sender] = list((await session.execute(
                select(ConversationMember.conversation_id)
                .join(Conversation, Conversation.id == ConversationMember.conversation_id)
                .where(
                    ConversationMember.user_id == sender,
                    Conversation.initiator_id != heavy,
                    Conversation.recipient_id != heavy,
                )
                .order_by(ConversationMember.conversation_id)
                .limit(targets_per_sender)
            )).scalars())
            if not targets[sender]:
                raise SystemExit(f"sender {sender} has no conversation to send into")
    fixture = Fixture(heavy, long_id, long_count, heavy_count, senders, targets)
    for user_id in [heavy, *senders]:
        async with sessions() as session:
            fixture.tokens[user_id] = (await session.run_sync(create_token, user_id, name="bench")).secret
    return fixture


# --------------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`parley serve` (one process) or N workers sharing one port through SO_REUSEPORT."""

    def __init__(self, database_url: str, processes: int, log_dir: Path) -> None:
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self._database_url = database_url
        self._count = processes
        self._log_dir = log_dir

    def start(self) -> None:
        env = {**os.environ, "PARLEY_DATABASE_URL": self._database_url, "PYTHONUNBUFFERED": "1"}
        for n in range(self._count):
            if self._count == 1:
                command = [str(Path(sys.executable).with_name("parley")), "serve", "--host", "127.0.0.1",
                           "--port", str(self.port), "--no-migrate"]
            else:
                command = [sys.executable, str(Path(__file__).resolve()), "--serve-worker", str(self.port)]
            log = self._log_dir / f"server-{self._count}p-{n}.log"
            self.logs.append(log)
            with log.open("wb") as out:
                # The log is a file, not a pipe: an unread pipe would fill and stall the server.
                # cwd is the log directory, so whatever the app keeps under relative paths (./var,
                # an embedded broker's file) stays out of the work tree.
                self.processes.append(
                    subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self._log_dir)
                )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.1) + 1):
            for proc, log in zip(self.processes, self.logs, strict=True):
                if proc.poll() is not None:
                    raise SystemExit(f"server exited with {proc.returncode}; log {log}:\n{log.read_text()[-2000:]}")
            if all("Running on" in log.read_text(errors="replace") for log in self.logs):
                try:
                    async with aiohttp.ClientSession() as client, client.get(f"{self.base_url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        raise SystemExit(f"server not ready after {timeout_s} s; see {self.logs}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on SIGINT
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def serve_worker(port: int) -> None:
    """One of several server processes on one port (--server-processes N): the app exactly as
    `parley serve` builds it, plus reuse_port so the kernel spreads connections across workers."""
    from aiohttp import web

    from parley.api.app import init_app
    from parley.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    from parley.event_loop import new_event_loop

    web.run_app(init_app(settings), host="127.0.0.1", port=port, reuse_port=True, access_log=None, loop=new_event_loop(),
                print=lambda line: print(line, flush=True))


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc (Linux)."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # Fields 14 and 15 (utime, stime) of proc(5); after_name starts at field 3.
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass(frozen=True)
class CpuSample:
    app: float
    postgres: float
    load: float


class CpuMeter:
    """Where the CPU goes: the app's processes, every postgres process on the machine (backends,
    WAL writer, …) and this load generator. On a 2-CPU machine that is the whole budget, so
    "CPU ms per operation" says what throughput the targets would need. Linux only; elsewhere
    the columns stay empty."""

    def __init__(self, app_pids: Sequence[int] | None) -> None:
        self._app_pids = list(app_pids) if app_pids is not None else None  # None: the app is this process
        self.available = Path("/proc/self/stat").exists()

    def sample(self) -> dict[int, float]:
        if not self.available:
            return {}
        pids = [*(self._app_pids or []), *_postgres_pids()]
        return {pid: _process_cpu_s(pid) for pid in pids} | {-1: sum(os.times()[:2])}

    def per_op(self, before: dict[int, float], after: dict[int, float], ops: int) -> CpuSample | None:
        if not self.available or ops <= 0:
            return None
        delta = {pid: after[pid] - before.get(pid, 0.0) for pid in after}  # new backends started at 0
        app = sum(delta.get(pid, 0.0) for pid in self._app_pids) if self._app_pids is not None else delta[-1]
        load = delta[-1] if self._app_pids is not None else 0.0
        postgres = sum(v for pid, v in delta.items() if pid != -1 and pid not in (self._app_pids or []))
        return CpuSample(app * 1000 / ops, postgres * 1000 / ops, load * 1000 / ops)


@dataclass
class Result:
    name: str
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    wall_s: float = 0.0
    p99_target_ms: float | None = None
    rate_target: float | None = None  # operations per second
    cpu: CpuSample | None = None  # CPU milliseconds per operation

    @property
    def target(self) -> str:
        parts = [f"p99 < {self.p99_target_ms:g} ms"] if self.p99_target_ms is not None else []
        parts += [f">= {self.rate_target:g}/s"] if self.rate_target is not None else []
        return ", ".join(parts)

    @property
    def verdict(self) -> str:
        if self.p99_target_ms is None and self.rate_target is None:
            return ""
        met = (self.p99_target_ms is None or self.p99_ms < self.p99_target_ms) and (
            self.rate_target is None or self.per_second >= self.rate_target
        )
        return "met" if met and not self.errors else "MISSED"

    def record_error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text[:300]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_s) * 1000 if self.latencies_s else math.nan

    @property
    def p99_ms(self) -> float:
        if not self.latencies_s:
            return math.nan
        ordered = sorted(self.latencies_s)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000  # nearest rank

    @property
    def per_second(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else math.nan


async def _get_json(client: aiohttp.ClientSession, url: str, token: str, params: dict[str, str], result: Result | None
                    ) -> dict[str, Any] | None:
    started = time.perf_counter()
    try:
        async with client.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.read()
    except aiohttp.ClientError as exc:
        if result is not None:
            result.record_error(repr(exc))
        return None
    elapsed = time.perf_counter() - started
    if resp.status != 200:
        if result is not None:
            result.record_error(f"{resp.status} {body[:200]!r}")
        return None
    if result is not None:
        result.latencies_s.append(elapsed)
    data: dict[str, Any] = json.loads(body)
    return data


async def _time_pages(url: str, token: str, fixed: Result, walked: Result, requests: int, warmup: int,
                      meter: CpuMeter, next_params: Callable[[dict[str, Any] | None], dict[str, str] | None]) -> None:
    """Time `requests` fetches of the first page into `fixed`, then walk page by page into
    `walked`: `next_params` turns a page into the parameters of the next (None: back to the first,
    which is not timed as part of the walk)."""
    first = {"limit": str(PAGE)}
    async with aiohttp.ClientSession() as client:
        for _ in range(warmup):
            await _get_json(client, url, token, first, None)
        cpu = meter.sample()
        for _ in range(requests):
            await _get_json(client, url, token, first, fixed)
        fixed.cpu = meter.per_op(cpu, cpu := meter.sample(), requests)
        params: dict[str, str] | None = None
        for _ in range(requests):
            page = await _get_json(client, url, token, params or first, walked if params is not None else None)
            params = next_params(page)
        walked.cpu = meter.per_op(cpu, meter.sample(), requests)


async def bench_history(base: str, fixture: Fixture, requests: int, warmup: int, meter: CpuMeter
                        ) -> tuple[Result, Result]:
    latest = Result("history page of 50, latest", p99_target_ms=READ_P99_TARGET_MS)
    paged = Result("history page of 50, before=", p99_target_ms=READ_P99_TARGET_MS)

    def older(page: dict[str, Any] | None) -> dict[str, str] | None:
        # Walk back through the long conversation; back at the top once it runs out. The oldest
        # message is first on a page: pages run oldest to newest.
        if page is None or not page["has_more"] or not page["items"]:
            return None
        return {"limit": str(PAGE), "before": page["items"][0]["id"]}

    url = f"{base}/api/v1/conversations/{fixture.long_conversation_id}/messages"
    await _time_pages(url, fixture.tokens[fixture.heavy_id], latest, paged, requests, warmup, meter, older)
    return latest, paged


async def bench_inbox(base: str, fixture: Fixture, requests: int, warmup: int, meter: CpuMeter
                      ) -> tuple[Result, Result]:
    first = Result("inbox page of 50, first", p99_target_ms=READ_P99_TARGET_MS)
    deeper = Result("inbox page of 50, cursor=", p99_target_ms=READ_P99_TARGET_MS)

    def following(page: dict[str, Any] | None) -> dict[str, str] | None:
        # Follow next_cursor through the whole inbox (100 pages at full size), then start over.
        cursor = page.get("next_cursor") if page is not None else None
        return {"limit": str(PAGE), "cursor": cursor} if cursor else None

    url = f"{base}/api/v1/conversations"
    await _time_pages(url, fixture.tokens[fixture.heavy_id], first, deeper, requests, warmup, meter, following)
    return first, deeper


async def bench_send(base: str, fixture: Fixture, total: int, warmup_per_client: int, meter: CpuMeter) -> Result:
    result = Result(f"send message, {SEND_CLIENTS} clients", p99_target_ms=SEND_P99_TARGET_MS,
                    rate_target=SEND_RATE_TARGET)
    per_client = max(1, total // SEND_CLIENTS)
    run_tag = f"{time.time_ns():x}"

    async def client_loop(n: int, sender: str, client: aiohttp.ClientSession, sends: int, record: bool) -> None:
        targets = fixture.send_targets[sender]
        headers = {"Authorization": f"Bearer {fixture.tokens[sender]}"}
        for i in range(sends):
            url = f"{base}/api/v1/conversations/{targets[i % len(targets)]}/messages"
            body = {"content": f"bench send {run_tag} client {n} #{i}: {SENTENCES[i % len(SENTENCES)]}"}
            started = time.perf_counter()
            try:
                async with client.post(url, json=body, headers=headers) as resp:
                    text = await resp.read()
            except aiohttp.ClientError as exc:
                result.record_error(repr(exc))
                continue
            elapsed = time.perf_counter() - started
            if not record:
                continue
            if resp.status == 201:
                result.latencies_s.append(elapsed)
            else:
                result.record_error(f"{resp.status} {text[:200]!r}")

    # One session, and so one keep-alive connection, per client: ten independent users.
    clients = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in range(SEND_CLIENTS)]
    try:
        pairs = list(enumerate(zip(fixture.sender_ids, clients, strict=True)))
        await asyncio.gather(*(client_loop(n, s, c, warmup_per_client, False) for n, (s, c) in pairs))
        cpu = meter.sample()
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(n, s, c, per_client, True) for n, (s, c) in pairs))
        result.wall_s = time.perf_counter() - started
        result.cpu = meter.per_op(cpu, meter.sample(), per_client * SEND_CLIENTS)
    finally:
        for client in clients:
            await client.close()
    return result


# --- the same operations in-process, without HTTP, auth or JSON ------------------------------


async def _timed(result: Result, count: int, operation: Callable[[], Awaitable[object]], meter: CpuMeter) -> None:
    cpu = meter.sample()
    for _ in range(count):
        started = time.perf_counter()
        await operation()
        result.latencies_s.append(time.perf_counter() - started)
    result.cpu = meter.per_op(cpu, meter.sample(), count)


async def bench_direct(settings: Settings, sessions: async_sessionmaker[AsyncSession], fixture: Fixture,
                       requests: int, sends: int) -> list[Result]:
    async with sessions() as session, session.begin():
        users = {u.id: u for u in (await session.execute(
            select(User).where(User.id.in_([fixture.heavy_id, *fixture.sender_ids])))).scalars()}
    heavy = users[fixture.heavy_id]

    async def history() -> None:
        async with sessions() as session:
            await session.run_sync(list_history, heavy, fixture.long_conversation_id, limit=PAGE)

    async def inbox() -> None:
        async with sessions() as session:
            await session.run_sync(list_inbox, heavy, limit=PAGE)

    meter = CpuMeter(None)
    history_result = Result("history latest (service only)")
    inbox_result = Result("inbox first (service only)")
    await _timed(Result("warm-up"), 20, history, meter)
    await _timed(history_result, requests, history, meter)
    await _timed(Result("warm-up"), 20, inbox, meter)
    await _timed(inbox_result, requests, inbox, meter)

    send_result = Result(f"send, {SEND_CLIENTS} tasks (service only)")
    per_task = max(1, sends // SEND_CLIENTS)

    async def sender_loop(n: int, sender_id: str) -> None:
        targets = fixture.send_targets[sender_id]
        for i in range(per_task):
            draft = MessageDraft(content=f"direct bench send {n} #{i}")
            started = time.perf_counter()
            async with sessions() as session:
                await session.run_sync(send_message, settings, users[sender_id], targets[i % len(targets)], draft)
            send_result.latencies_s.append(time.perf_counter() - started)

    cpu = meter.sample()
    started = time.perf_counter()
    await asyncio.gather(*(sender_loop(n, s) for n, s in enumerate(fixture.sender_ids)))
    send_result.wall_s = time.perf_counter() - started
    send_result.cpu = meter.per_op(cpu, meter.sample(), per_task * SEND_CLIENTS)
    return [history_result, inbox_result, send_result]


# --- EXPLAIN ANALYZE of what the pages really run ---------------------------------------------


async def explain_pages(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], fixture: Fixture) -> None:
    async with sessions() as session, session.begin():
        heavy = await session.get(User, fixture.heavy_id)
    assert heavy is not None
    captured: list[tuple[str, str, Any]] = []
    label = ""

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((label, statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with sessions() as session:
            label = "inbox, first page"
            page = await session.run_sync(list_inbox, heavy, limit=PAGE)
        async with sessions() as session:
            label = "inbox, second page (cursor)"
            await session.run_sync(list_inbox, heavy, cursor=page.next_cursor, limit=PAGE)
        async with sessions() as session:
            label = "history, latest page"
            history = await session.run_sync(list_history, heavy, fixture.long_conversation_id, limit=PAGE)
        async with sessions() as session:
            label = "history, before="
            await session.run_sync(list_history, heavy, fixture.long_conversation_id, before=history.items[0].id, limit=PAGE)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)

    async with engine.connect() as conn:
        for label, statement, parameters in captured:
            plan = (await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)).scalars().all()
            print(f"\n--- {label} ---\n{statement.strip()}\n" + "\n".join(f"    {line}" for line in plan))
        await conn.rollback()


# --------------------------------------------------------------------------------------------
# Report and main
# --------------------------------------------------------------------------------------------


def print_table(title: str, results: Sequence[Result]) -> None:
    print(f"\n{title}")
    header = (f"  {'operation':<36} {'n':>6} {'median ms':>10} {'p99 ms':>8} {'per s':>7} {'errors':>6} "
              f"{'CPU ms/op: app':>15} {'pg':>5} {'load':>5}   target")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in results:
        rate = f"{r.per_second:7.0f}" if r.wall_s else f"{'':>7}"
        cpu = (f"{r.cpu.app:>15.2f} {r.cpu.postgres:>5.2f} {r.cpu.load:>5.2f}" if r.cpu is not None
               else f"{'':>15} {'':>5} {'':>5}")
        print(f"  {r.name:<36} {len(r.latencies_s):>6} {r.median_ms:>10.2f} {r.p99_ms:>8.2f} {rate} {r.errors:>6} "
              f"{cpu}   {r.target}{'  ' + r.verdict if r.verdict else ''}")
    for r in results:
        if r.errors:
            print(f"  first error of {r.name!r}: {r.first_error}")


async def measure(args: argparse.Namespace, settings: Settings, processes: int, fixture: Fixture, log_dir: Path
                  ) -> list[Result]:
    server = Server(settings.database_url, processes, log_dir)
    server.start()
    try:
        await server.wait_ready()
        meter = CpuMeter([p.pid for p in server.processes])
        history = await bench_history(server.base_url, fixture, args.requests, args.warmup, meter)
        inbox = await bench_inbox(server.base_url, fixture, args.requests, args.warmup, meter)
        send = await bench_send(server.base_url, fixture, args.sends, max(1, args.warmup // 5), meter)
    finally:
        died = [(p.returncode, log) for p, log in zip(server.processes, server.logs, strict=True) if p.poll() is not None]
        server.stop()
    for code, log in died:  # a server that exited during the run explains any errors above
        print(f"server process exited early with {code}; last lines of {log}:\n{log.read_text()[-2000:]}")
    return [*history, *inbox, send]


async def run(args: argparse.Namespace) -> None:
    settings = load_settings(database_url=args.database_url)
    engine = create_async_db_engine(settings)
    sessions = async_session_factory(engine)
    try:
        fixture = await load_fixture(sessions, args.targets_per_sender)
        print(f"\nheavy user {fixture.heavy_id}: {fixture.heavy_conversations:,} conversations; long conversation "
              f"{fixture.long_conversation_id}: {fixture.long_conversation_messages:,} messages")
        # Server logs are kept (one JSON line a request), to look into errors afterwards.
        log_dir = Path(tempfile.mkdtemp(prefix="parley-bench-"))
        print(f"server logs in {log_dir}")
        print("CPU ms/op: app = the server process(es) (in the service-only table: this process), "
              "pg = all postgres processes, load = this load generator")
        for processes in args.server_processes:
            results = await measure(args, settings, processes, fixture, log_dir)
            plural = "es" if processes > 1 else ""
            print_table(f"HTTP, {processes} server process{plural} "
                        f"({os.cpu_count()} CPUs shared by client, server and PostgreSQL)", results)
        if args.direct:
            print_table("Service functions in-process (no HTTP, no token check, no JSON)",
                        await bench_direct(settings, sessions, fixture, args.requests, args.sends))
        if args.explain:
            await explain_pages(engine, sessions, fixture)
    finally:
        await engine.dispose()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="PostgreSQL on 127.0.0.1; dropped and recreated unless --skip-seed (its name must contain 'bench')")
    parser.add_argument("--skip-seed", action="store_true", help="reuse a database this script seeded before")
    parser.add_argument("--users", type=int, default=1_000, help="regular users (the heavy user is one)")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--heavy-conversations", type=int, default=5_000,
                        help="conversations of the user whose inbox is timed")
    parser.add_argument("--long-messages", type=int, default=5_000,
                        help="messages in the conversation whose history is timed")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per read measurement")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each read measurement")
    parser.add_argument("--sends", type=int, default=5_000, help="timed sends in all, over the 10 clients")
    parser.add_argument("--targets-per-sender", type=int, default=50, help="conversations each sending client rotates over")
    parser.add_argument("--server-processes", type=int, nargs="+", default=[1],
                        help="server processes; several values measure each in turn, e.g. 1 2")
    parser.add_argument("--direct", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the service functions in-process")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the inbox and history queries")
    parser.add_argument("--serve-worker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("requests", "sends", "targets_per_sender", "long_messages"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if any(p < 1 or p > 16 for p in args.server_processes):
        raise SystemExit("--server-processes takes values from 1 to 16")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_worker is not None:
        serve_worker(args.serve_worker)
        return
    name = check_database_url(args.database_url, will_drop=not args.skip_seed)
    if not args.skip_seed:
        sizes = Sizes(args.users, args.conversations, args.messages, args.heavy_conversations, args.long_messages)
        sizes.check()
        print(f"seeding {name}: {sizes.users:,} users, {sizes.conversations:,} conversations, {sizes.messages:,} messages")
        started = time.perf_counter()
        recreate_database(args.database_url, name)
        upgrade_to_head(load_settings(database_url=args.database_url))
        print(f"  database recreated and migrated in {time.perf_counter() - started:.1f} s")
        seed(args.database_url, sizes)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
