"""kombu's Redis transport with two repairs, used for redis:// broker URLs (see workers/broker.py).
Drop each once kombu/celery fix it upstream (checked against celery 5.7.0, kombu 5.7.0, redis 8.1).

1. Surviving a Redis outage. When Redis goes away while a worker holds unacknowledged tasks
   (always, with acks_late and a task running), the worker's reconnect path detaches the transport
   from the old connection, then still uses the old channel: closing it tries to hand the
   unacknowledged tasks back, and a task finishing afterwards acknowledges through it. Both raise
   AttributeError on the detached transport, which Celery treats as unrecoverable: the worker
   exits instead of reconnecting (tests/workers/test_reliability.py's outage test reproduces it).
   Here a channel whose transport is gone raises the connection error any broken connection
   raises, which Celery and kombu already handle: the hand-back and the acknowledgement are logged
   and dropped. Nothing is lost: the tasks stay in Redis's unacked set and Redis hands them out
   again after the visibility timeout; a repeat is absorbed by the consumer's receipt.

2. One Redis client per channel. kombu builds a new redis.Redis object for every publish, every
   delivery it records and every acknowledgement; redis-py 8 fills a table of ~170 response
   callbacks each time, about 0.35 ms of CPU, several times per task. The client is only a handle
   on the channel's connection pool, so one per pool serves them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _connparams(self, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("this broker connection was closed after a connection loss")
        return super()._connparams(asynchronous=asynchronous)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # a new pool after a reconnect: then a new client too
        if self._shared_client is None or self._shared_client.connection_pool is not pool:
            self._shared_client = self._create_client()
        yield self._shared_client


class Transport(kombu_redis.Transport):
    Channel = Channel
