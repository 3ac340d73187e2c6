"""The expiry sweeper: unpaid orders past `pay_by` become `expired` and give units back.

`FOR UPDATE SKIP LOCKED` lets several sweepers run at once, each order expiring once; a
payment racing the sweep ends as exactly one of paid or expired (one row, one transition).
The same pass retries giving back units of cancelled or expired orders whose release to
Redis never completed (a crash, or Redis down).
"""

from __future__ import annotations

import asyncio
import logging

from seckill import metrics
from seckill.orders import Q
from workers.base import Backoff, WorkerContext, wait_or_stop

log = logging.getLogger(__name__)
BATCH = 500
RETURN_GRACE_S = 5


async def sweep_once(ctx: WorkerContext) -> int:
    """Expire due orders and finish unreturned releases; returns orders expired."""
    expired = await ctx.db.fetch(Q["expire_due"], BATCH)
    if expired:
        metrics.ORDERS_EXPIRED.inc(len(expired))
        await ctx.orders.give_back(expired)
    leftovers = await ctx.db.fetch(Q["unreturned"], RETURN_GRACE_S, BATCH)
    if leftovers:
        await ctx.orders.give_back(leftovers)
    return len(expired)


async def run(ctx: WorkerContext, stop: asyncio.Event) -> None:
    backoff = Backoff()
    interval = ctx.settings.expiry_interval_ms / 1000
    while not stop.is_set():
        try:
            count = await sweep_once(ctx)
        except Exception as exc:
            log.warning("expiry pass failed, retrying: %r", exc)
            await backoff.wait(stop)
            continue
        backoff.reset()
        if count < BATCH:
            await wait_or_stop(stop, interval)
