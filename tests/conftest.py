"""Session fixtures: an isolated database, Redis prefix and vhost; the stack running on them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from redis.asyncio import Redis

from seckill.runner import run_workers
from seckill.settings import Settings
from seckill.web.app import create_app
from tests.support import Api, Isolation, isolated
from workers import WORKERS


@pytest.fixture(scope="session")
async def isolation() -> AsyncIterator[Isolation]:
    async with isolated() as iso:
        yield iso


@pytest.fixture(scope="session")
def settings(isolation: Isolation) -> Settings:
    return isolation.settings


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> AsyncIterator[str]:
    """The front door and every worker, running in this test session's event loop."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(settings, list(WORKERS), stop))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await workers
        await runner.cleanup()


@pytest.fixture(scope="session")
async def api(stack: str, settings: Settings) -> AsyncIterator[Api]:
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Api(session, stack, settings.jwt_secret)


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
