"""Knowing that no won order is in flight between RabbitMQ and PostgreSQL.

Rebuilding a sale that Redis lost counts the orders PostgreSQL and Redis know. An order
message still in the queue, or taken by an order writer but not yet committed, would be
missed: its units sold a second time. So a rebuild first waits until the queue is empty
AND every order writer reports holding nothing, in a report made after the queue was seen
empty (RabbitMQ cannot tell unacknowledged messages over AMQP, so each writer tells, through
a beacon in Redis stamped with Redis' clock). A writer that stalls (PostgreSQL down) keeps
reporting what it holds, so the rebuild keeps waiting; a writer that dies stops reporting,
and once RabbitMQ drops its consumer its messages are back in the queue. A silent writer
whose consumer RabbitMQ still sees keeps the rebuild waiting. When nothing can be told, the
answer is "wait".

Not covered: wins still in a front door's memory (its pump) when Redis lost the sale; they
are in no queue yet. The pump publishes within milliseconds, well inside the settle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from redis.asyncio import Redis

from seckill.broker import QueueState
from seckill.keys import KeySpace

log = logging.getLogger(__name__)

BEACON_INTERVAL_S = 0.2
BEACON_STALE_S = 3.0  # a writer silent this long is dead (its messages go back to the queue)
SETTLE_S = 0.6        # reports must postdate the empty queue by this much (transit time)


async def redis_ms(redis: Redis) -> int:
    """Redis' clock: one clock for every host's beacons and for the judge."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def beacon(redis: Redis, keys: KeySpace, writer_id: str, holding: Callable[[], int],
                 consuming: Callable[[], bool], stop: asyncio.Event) -> None:
    """An order writer's beacon, every BEACON_INTERVAL_S: how many messages it holds, when
    (Redis' clock, read BEFORE the count, so the count is never older than the stamp), and
    whether its consumer is registered with RabbitMQ."""
    try:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # Redis down: the rebuild cannot run either
                at = await redis_ms(redis)
                report = f"{holding()}:{at}:{int(consuming())}"
                await redis.hset(keys.writers, writer_id, report)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BEACON_INTERVAL_S)
    finally:
        with contextlib.suppress(Exception):
            await redis.hdel(keys.writers, writer_id)


async def drained_since(redis: Redis, keys: KeySpace, since_ms: int, consumers: int) -> bool:
    """True when every live writer reported holding nothing after `since_ms`, and the live
    writers account for every consumer of the queue (a writer that stopped reporting but is
    still connected — paused, cut off from Redis — may hold messages: not drained)."""
    reports = cast(dict[str, str], await redis.hgetall(keys.writers))
    now_ms = await redis_ms(redis)
    live_consumers = 0
    for report in reports.values():
        held, at, consuming = report.split(":")
        if now_ms - int(at) > BEACON_STALE_S * 1000:
            continue  # silent: counts only if RabbitMQ still sees its consumer (below)
        if int(at) < since_ms or int(held) != 0:
            return False
        live_consumers += consuming == "1"
    # Every consumer RabbitMQ sees must be a writer reporting as consuming: a starting or
    # stopping writer cannot stand in for a silent one that may hold messages.
    return live_consumers >= consumers


async def wait_until_drained(redis: Redis, keys: KeySpace,
                             queue_state: Callable[[], Awaitable[QueueState | None]]) -> None:
    """Wait (as long as it takes) until no order is in flight; see the module docstring."""
    empty_since: int | None = None
    waited_from = time.monotonic()
    next_log = waited_from + 10
    while True:
        state = await queue_state()
        if state is None or state.messages != 0:
            empty_since = None
        else:
            now_ms = await redis_ms(redis)
            empty_since = empty_since or now_ms
            if now_ms - empty_since >= SETTLE_S * 1000 and await drained_since(
                    redis, keys, empty_since + int(SETTLE_S * 1000), state.consumers):
                again = await queue_state()
                if again is not None and again.messages == 0:
                    return
                empty_since = None
        if time.monotonic() > next_log:
            next_log += 10
            log.warning("waiting %.0f s for orders in flight to reach PostgreSQL (%s) before "
                        "rebuilding", time.monotonic() - waited_from, state)
        await asyncio.sleep(BEACON_INTERVAL_S)
