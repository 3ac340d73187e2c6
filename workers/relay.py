"""The relay: republishes outbox entries that the front door never saw confirmed."""

from __future__ import annotations

import asyncio
import logging

from seckill.outbox import relay_once
from workers.base import Backoff, WorkerContext, wait_or_stop

log = logging.getLogger(__name__)
INTERVAL_S = 1.0


async def run(ctx: WorkerContext, stop: asyncio.Event) -> None:
    backoff = Backoff()
    while not stop.is_set():
        try:
            await relay_once(ctx.redis, ctx.keys, ctx.publisher,
                             grace_ms=ctx.settings.outbox_grace_ms)
        except Exception as exc:
            log.warning("relay pass failed, retrying: %r", exc)
            await backoff.wait(stop)
            continue
        backoff.reset()
        await wait_or_stop(stop, INTERVAL_S)
