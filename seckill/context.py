"""The services a background job needs, opened together: connections and domain objects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import Redis

from seckill.broker import ConfirmedPublisher, Topology
from seckill.connections import open_amqp, open_db, open_redis
from seckill.keys import KeySpace
from seckill.orders import Orders
from seckill.scripts import ScriptRunner, Scripts, resend_window
from seckill.settings import Settings


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


@contextlib.asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[WorkerContext]:
    async with (open_redis(settings) as redis, open_db(settings) as db,
                open_amqp(settings) as amqp):
        keys = KeySpace(settings.redis_prefix)
        runner = ScriptRunner(redis, resend_within_s=resend_window(settings.outbox_grace_ms))
        scripts = Scripts(runner)
        topology = Topology(settings.amqp_prefix, settings.delivery_limit)
        publisher = ConfirmedPublisher(amqp, topology, settings.publish_timeout_s)
        try:
            yield WorkerContext(settings, redis, db, amqp, keys, scripts,
                                Orders(db, redis, keys, scripts), topology, publisher)
        finally:
            await publisher.close()
            await runner.close()
