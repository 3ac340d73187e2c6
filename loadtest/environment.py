"""A private place to run the stack in: its own database, Redis key prefix and AMQP names.

Nothing is shared with another run or with the developer's own data, and `destroy` removes
all of it: the database, every Redis key under the prefix, the RabbitMQ queues and exchanges.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
from redis.asyncio import Redis

from seckill.broker import Topology
from seckill.migrate import migrate

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@dataclass(frozen=True, slots=True)
class Environment:
    tag: str
    database_url: str
    redis_url: str
    amqp_url: str
    redis_prefix: str
    amqp_prefix: str
    jwt_secret: str

    @classmethod
    def new(cls, kind: str = "bench", *, database_url: str = DEFAULT_DATABASE_URL,
            redis_url: str = DEFAULT_REDIS_URL, amqp_url: str = DEFAULT_AMQP_URL) -> Environment:
        """A fresh environment; `database_url` names the server (its database is replaced)."""
        tag = uuid.uuid4().hex[:10]
        return cls(
            tag=tag,
            database_url=_with_database(database_url, f"seckill_{kind}_{tag}"),
            redis_url=redis_url,
            amqp_url=amqp_url,
            redis_prefix=f"{kind}{tag}",
            amqp_prefix=f"seckill-{kind}-{tag}",
            jwt_secret=secrets.token_urlsafe(32),
        )

    def env_vars(self, port: int) -> dict[str, str]:
        """What `seckill serve` and `seckill worker` need to run in this environment."""
        return {
            "SECKILL_DATABASE_URL": self.database_url,
            "SECKILL_REDIS_URL": self.redis_url,
            "SECKILL_AMQP_URL": self.amqp_url,
            "SECKILL_REDIS_PREFIX": self.redis_prefix,
            "SECKILL_AMQP_PREFIX": self.amqp_prefix,
            "SECKILL_JWT_SECRET": self.jwt_secret,
            "SECKILL_HOST": "127.0.0.1",
            "SECKILL_PORT": str(port),
        }

    async def create(self) -> None:
        await migrate(self.database_url)

    async def destroy(self) -> None:
        """Remove everything the run left; each part is attempted even if another fails."""
        errors: list[Exception] = []
        for part in (self._drop_redis, self._drop_amqp, self._drop_database):
            try:
                await part()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise ExceptionGroup("cleaning up the environment failed", errors)

    async def _drop_redis(self) -> None:
        redis = Redis.from_url(self.redis_url)
        try:
            batch: list[bytes] = []
            async for key in redis.scan_iter(f"{self.redis_prefix}:*", 1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await redis.delete(*batch)
                    batch = []
            if batch:
                await redis.delete(*batch)
        finally:
            await redis.aclose()

    async def _drop_amqp(self) -> None:
        topo = Topology(self.amqp_prefix)
        connection = await aio_pika.connect(self.amqp_url, timeout=10)
        async with connection:
            for queue in (topo.queue, topo.dead_queue):
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await channel.queue_delete(queue)
            for exchange in (topo.exchange, topo.dead_exchange):
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await channel.exchange_delete(exchange)

    async def _drop_database(self) -> None:
        name = urlsplit(self.database_url).path.lstrip("/")
        admin = await asyncpg.connect(_with_database(self.database_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
