"""`seckill up`: migrate, then the front door and every worker in one process."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from seckill.appkeys import DB, OPERATIONS
from seckill.migrate import migrate
from seckill.runner import run, run_workers, serve_until
from seckill.settings import Settings

log = logging.getLogger(__name__)


def up(settings: Settings, *, demo: bool = False) -> int:
    from workers import WORKERS

    async def main(stop: asyncio.Event) -> None:
        report = await migrate(settings.database_url)
        if report.applied:
            log.info("applied migrations: %s", ", ".join(report.applied))

        async def ready(app: web.Application, port: int) -> None:
            if demo:
                from seckill.demo import demo_instructions, ensure_demo_sale

                sale = await ensure_demo_sale(app[DB], app[OPERATIONS])
                print(demo_instructions(sale, settings.jwt_secret,
                                        f"http://{settings.host}:{port}"), flush=True)
            print(f"seckill is up on http://{settings.host}:{port} — Ctrl-C stops it.",
                  flush=True)

        workers = asyncio.create_task(run_workers(settings, list(WORKERS), stop))
        try:
            await serve_until(settings, stop, ready=ready)
        finally:
            stop.set()
            await workers
        log.info("stopped cleanly")

    run(main)
    return 0
