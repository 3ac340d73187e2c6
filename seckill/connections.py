"""Open and close each backing service; used by the app's cleanup contexts and the workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import BlockingConnectionPool, Redis
from yarl import URL

from seckill.settings import Settings

log = logging.getLogger(__name__)


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
async def open_amqp(settings: Settings, *, wait: bool = True
                    ) -> AsyncIterator[AbstractRobustConnection]:
    """A robust connection to RabbitMQ. With `wait=False` (the front door) an unreachable
    broker is not fatal: the connection keeps trying in the background, and meanwhile
    publishes fail fast and the wins wait in the Redis outbox."""
    try:
        connection = await aio_pika.connect_robust(settings.amqp_url, timeout=5,
                                                   reconnect_interval=1)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError,
            StopAsyncIteration):  # aiormq's error when the peer hangs up mid-handshake
        if wait:
            raise
        log.warning("RabbitMQ is unreachable; serving anyway, wins wait in the outbox")
        connection = aio_pika.RobustConnection(URL(settings.amqp_url), reconnect_interval=1,
                                               fail_fast="false")
        connecting = asyncio.ensure_future(connection.connect(timeout=5))
        try:
            yield connection
        finally:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            await connection.close()
        return
    try:
        yield connection
    finally:
        await connection.close()
