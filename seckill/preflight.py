"""Before starting: is each backing service reachable? One clear sentence when one is not."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from seckill.settings import Settings

_HOW = {
    "Redis": "redis-server",
    "RabbitMQ": "rabbitmq-server",
    "PostgreSQL": "postgresql",
}


def _where(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


async def _reachable(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def missing_services(settings: Settings) -> list[str]:
    """A sentence for each service that does not accept connections."""
    targets = {
        "Redis": (_where(settings.redis_url, 6379), "SECKILL_REDIS_URL"),
        "RabbitMQ": (_where(settings.amqp_url, 5672), "SECKILL_AMQP_URL"),
        "PostgreSQL": (_where(settings.database_url, 5432), "SECKILL_DATABASE_URL"),
    }
    results = await asyncio.gather(*(_reachable(h, p) for (h, p), _ in targets.values()))
    problems = []
    for (name, ((host, port), var)), ok in zip(targets.items(), results, strict=True):
        if not ok:
            problems.append(
                f"{name} is not reachable at {host}:{port} ({var}): start it with "
                f"`docker compose up -d {name.lower()}` or install your distribution's "
                f"`{_HOW[name]}` package and start its service.")
    return problems
