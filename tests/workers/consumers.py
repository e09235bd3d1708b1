"""Consumers that exist only in the tests, registered through
PARLEY_EXTRA_CONSUMERS=tests.workers.consumers (or `extra_consumers=` in Settings).

Their effect is a row in `test_consumer_effects`, written in the consumer's transaction, with no
unique constraint: a consumer that ran twice would leave two rows. Outside the transaction they
also note every attempt (event and process id) in a file, so a test can see a task run again.

The control directory (TEST_CONSUMER_DIR) steers them: while a file `hold` exists there, an attempt
of the consumer it names (any, if empty) waits, which lets a test kill a worker in the middle of
a task.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, String, Table, func, select
from sqlalchemy.orm import Session

from parley.events import EventType
from parley.outbox.consumers import Consumer, EventDelivery, Handler, WorkKind

CONTROL_DIR_ENV = "TEST_CONSUMER_DIR"
HOLD_LIMIT_SECONDS = 60.0  # never hold a worker for ever, whatever the test does

metadata = MetaData()
effects = Table(
    "test_consumer_effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consumer", String(100), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("conversation_id", String(26)),
    Column("pid", Integer, nullable=False),
)


def _control_dir() -> Path | None:
    value = os.environ.get(CONTROL_DIR_ENV)
    return Path(value) if value else None


def _note_attempt_and_hold(consumer: str, delivery: EventDelivery) -> None:
    control = _control_dir()
    if control is None:
        return
    with (control / "attempts").open("a") as attempts:
        attempts.write(f"{consumer} {delivery.event_id} {os.getpid()}\n")
    hold = control / "hold"
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while time.monotonic() < deadline:
        try:
            held = hold.read_text().strip()
        except FileNotFoundError:
            return
        if held and held != consumer:
            return
        time.sleep(0.02)


def _record(consumer: str) -> Handler:
    def handle(session: Session, delivery: EventDelivery) -> None:
        _note_attempt_and_hold(consumer, delivery)
        session.execute(
            effects.insert().values(
                consumer=consumer,
                event_id=delivery.event_id,
                event_type=delivery.type,
                sequence=delivery.sequence,
                conversation_id=delivery.conversation_id,
                pid=os.getpid(),
            )
        )

    return handle


CONSUMERS = [
    Consumer(
        name="test-effects", event_types=frozenset(EventType), handle=_record("test-effects"), kind=WorkKind.WEBHOOKS
    ),
    Consumer(
        name="test-ordered",
        event_types=frozenset({EventType.MESSAGE_CREATED}),
        handle=_record("test-ordered"),
        kind=WorkKind.MIRROR,
        ordered=True,
    ),
]


def create_effects_table(engine: Engine) -> None:
    metadata.create_all(engine)


def drop_effects_table(engine: Engine) -> None:
    metadata.drop_all(engine)


def effect_rows(engine: Engine, consumer: str) -> list[tuple[int, int, int]]:
    """(event_id, sequence, pid) of each effect of `consumer`, in the order they were written."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(effects.c.event_id, effects.c.sequence, effects.c.pid)
            .where(effects.c.consumer == consumer)
            .order_by(effects.c.id)
        ).all()
    return [(r.event_id, r.sequence, r.pid) for r in rows]


def effect_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(effects)).scalar_one())
