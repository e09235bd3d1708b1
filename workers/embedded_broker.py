"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned so the processes of
one machine (the API and beat publishing, a worker consuming) can share it safely.

Selected by PARLEY_BROKER_URL=sqla+sqlite:///path (see workers/broker.py). Why this transport:
kombu's filesystem transport lets a consumer move a message file away while its producer is still
writing it (the producer's lock is never checked by the consumer), so under load a consumer can
read half a message. SQLite transactions have no such gap. What the tuning changes from the stock
transport, and why:

- WAL with synchronous=NORMAL: the stock rollback journal costs two fsyncs per publish, and the
  dispatcher publishes while it holds the outbox's write transaction.
- a 30 s busy timeout instead of 5 s: a publish waits its turn rather than failing under load.
- a consumed message is deleted, not kept forever with visible=0.
- an index on (queue_id, id): each poll finds its queue's oldest message without a table scan.
- creating the tables tolerates another process creating them at the same moment.

Like every kombu virtual transport, an unacknowledged message lives in the consuming worker's
memory: a warm shutdown puts it back, a SIGKILLed worker loses it. Redis is the broker for
anything beyond one machine; see the README.
"""

from __future__ import annotations

import threading
import warnings
from queue import Empty
from typing import Any

from kombu.transport.sqlalchemy import Channel as SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport
from kombu.transport.sqlalchemy.models import metadata
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import Engine, create_engine, delete, select, text
from sqlalchemy.exc import OperationalError, SADeprecationWarning
from sqlalchemy.orm import sessionmaker

from parley.db import SQLITE_BUSY_TIMEOUT_SECONDS, apply_sqlite_pragmas, prepare_sqlite_file

# kombu's own models use a loader option SQLAlchemy 2.1 deprecates; nothing here can change that,
# and the warning would otherwise greet every newcomer running `parley up`.
warnings.filterwarnings(
    "ignore",
    message=r"The ``noload`` loader strategy is deprecated",
    category=SADeprecationWarning,
    module=r"kombu\.transport\.sqlalchemy",
)

CREATE_ATTEMPTS = 5

_engines_lock = threading.Lock()


def _tuned_engine(url: str) -> Engine:
    prepare_sqlite_file(url)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    apply_sqlite_pragmas(engine)  # the same WAL, busy timeout and synchronous mode as Parley's database
    return engine


def _create_tables(engine: Engine, message_table: str) -> None:
    for attempt in range(CREATE_ATTEMPTS):
        try:
            metadata.create_all(engine)
            with engine.begin() as connection:
                connection.execute(
                    text(
                        f"CREATE INDEX IF NOT EXISTS ix_{message_table}_queue_id_id "
                        f"ON {message_table} (queue_id, id)"
                    )
                )
            return
        except OperationalError as exc:
            # Another process created a table between our existence check and our CREATE.
            if "already exists" not in str(exc) or attempt == CREATE_ATTEMPTS - 1:
                raise


class Channel(SQLAlchemyChannel):
    _engines: dict[str, tuple[Engine, sessionmaker[Any]]] = {}  # per process, as upstream

    def _open(self) -> tuple[Engine, sessionmaker[Any]]:
        url = self.connection.client.hostname
        with _engines_lock:
            if url not in self._engines:
                engine = _tuned_engine(url)
                _create_tables(engine, self.message_tablename)
                self._engines[url] = (engine, sessionmaker(bind=engine))
            return self._engines[url]

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        queue_row = self._get_or_create(queue)
        message = self.message_cls
        session = self.session
        # Take the write lock before reading, so two consumers cannot both pick the same message.
        session.execute(text("BEGIN IMMEDIATE"))
        try:
            row = session.execute(
                select(message.id, message.payload)
                .where(message.queue_id == queue_row.id, message.visible.is_not(False))
                .order_by(message.id)
                .limit(1)
            ).first()
            if row is not None:
                session.execute(delete(message).where(message.id == row.id))
            session.commit()
        except BaseException:
            session.rollback()
            raise
        if row is None:
            raise Empty()
        return loads(bytes_to_str(row.payload))


class Transport(SQLAlchemyTransport):
    Channel = Channel
    driver_name = "sqlite (parley embedded)"
