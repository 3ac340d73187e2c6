"""Open and close each backing service; used by the app's cleanup contexts and the workers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import BlockingConnectionPool, Redis

from seckill.settings import Settings


@contextlib.asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[Redis]:
    # The blocking pool waits for a free connection instead of raising under load.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_pool_size, timeout=5,
        decode_responses=True, socket_connect_timeout=5, socket_timeout=5,
        health_check_interval=30)
    redis = Redis(connection_pool=pool)
    try:
        yield redis
    finally:
        await redis.aclose()
        await pool.disconnect()


@contextlib.asynccontextmanager
async def open_db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1,
                                     max_size=settings.db_pool_size, command_timeout=30,
                                     timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def open_amqp(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(settings.amqp_url, timeout=10,
                                               reconnect_interval=1)
    try:
        yield connection
    finally:
        await connection.close()
