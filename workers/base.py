"""What every worker gets: the open connections and domain services, and a stop signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import Redis

from seckill.broker import ConfirmedPublisher, Topology
from seckill.connections import open_amqp, open_db, open_redis
from seckill.keys import KeySpace
from seckill.orders import Orders
from seckill.scripts import ScriptRunner, Scripts
from seckill.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    redis: Redis
    db: asyncpg.Pool
    amqp: AbstractRobustConnection
    keys: KeySpace
    scripts: Scripts
    orders: Orders
    topology: Topology
    publisher: ConfirmedPublisher


WorkerFn = Callable[[WorkerContext, asyncio.Event], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[WorkerContext]:
    async with (open_redis(settings) as redis, open_db(settings) as db,
                open_amqp(settings) as amqp):
        keys = KeySpace(settings.redis_prefix)
        runner = ScriptRunner(redis)
        scripts = Scripts(runner)
        topology = Topology(settings.amqp_prefix, settings.delivery_limit)
        publisher = ConfirmedPublisher(amqp, topology, settings.publish_timeout_s)
        try:
            yield WorkerContext(settings, redis, db, amqp, keys, scripts,
                                Orders(db, redis, keys, scripts), topology, publisher)
        finally:
            await publisher.close()
            await runner.close()


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep until `seconds` pass or `stop` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Backoff:
    """Exponential backoff for retrying a service that is down."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self._first = first_s
        self._cap = cap_s
        self._next = first_s

    def reset(self) -> None:
        self._next = self._first

    async def wait(self, stop: asyncio.Event) -> None:
        await wait_or_stop(stop, self._next)
        self._next = min(self._next * 2, self._cap)
