"""Knowing that no won order is in flight between RabbitMQ and PostgreSQL.

Rebuilding a sale that Redis lost counts the orders PostgreSQL and Redis know. An order
message still in the queue, or taken by an order writer but not yet committed, would be
missed: its units sold a second time. So a rebuild first waits until the queue is empty
AND every live order writer reports holding nothing, in a report made after the queue was
seen empty (RabbitMQ cannot tell unacknowledged messages over AMQP, so each writer tells,
through a beacon in Redis). A writer that stalls (PostgreSQL down) keeps reporting what it
holds, so the rebuild keeps waiting; a writer that dies stops reporting, and RabbitMQ puts
its messages back in the queue. When nothing can be told, the answer is "wait".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from redis.asyncio import Redis

from seckill.keys import KeySpace

log = logging.getLogger(__name__)

BEACON_INTERVAL_S = 0.2
BEACON_STALE_S = 3.0  # a writer silent this long is dead (its messages go back to the queue)
SETTLE_S = 0.6        # reports must postdate the empty queue by this much (transit time)


async def beacon(redis: Redis, keys: KeySpace, writer_id: str, holding: Callable[[], int],
                 stop: asyncio.Event) -> None:
    """An order writer's beacon: how many messages it holds, every BEACON_INTERVAL_S."""
    try:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # Redis down: the rebuild cannot run either
                await redis.hset(keys.writers, writer_id,
                                 f"{holding()}:{int(time.time() * 1000)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BEACON_INTERVAL_S)
    finally:
        with contextlib.suppress(Exception):
            await redis.hdel(keys.writers, writer_id)


async def drained_since(redis: Redis, keys: KeySpace, since_ms: int) -> bool:
    """True when every live writer reported holding nothing after `since_ms`."""
    reports = cast(dict[str, str], await redis.hgetall(keys.writers))
    now_ms = time.time() * 1000
    for report in reports.values():
        held, _, at = report.partition(":")
        if now_ms - int(at) > BEACON_STALE_S * 1000:
            continue  # dead: RabbitMQ returns what it held to the queue
        if int(at) < since_ms or int(held) != 0:
            return False
    return True


async def wait_until_drained(redis: Redis, keys: KeySpace,
                             queue_depth: Callable[[], Awaitable[int | None]]) -> None:
    """Wait (as long as it takes) until no order is in flight; see the module docstring."""
    empty_since: float | None = None
    waited_from = time.monotonic()
    next_log = waited_from + 10
    while True:
        depth = await queue_depth()
        if depth != 0:
            empty_since = None
        else:
            empty_since = empty_since or time.time()
            settled = time.time() - empty_since >= SETTLE_S
            if settled and await drained_since(redis, keys,
                                               int((empty_since + SETTLE_S) * 1000)):
                if await queue_depth() == 0:
                    return
                empty_since = None
        if time.monotonic() > next_log:
            next_log += 10
            log.warning("waiting %.0f s for orders in flight to reach PostgreSQL "
                        "(queue depth %s) before rebuilding", time.monotonic() - waited_from,
                        depth)
        await asyncio.sleep(BEACON_INTERVAL_S)
