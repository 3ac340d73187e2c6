"""A response lost after the server decided: the shopper retries with the same key.

Shoppers buy through a slow proxy in front of the front door; once Redis has decided every
purchase, the proxy resets every connection before a single answer gets through. Each
shopper retries with the same Idempotency-Key: the same order comes back, and no unit is
taken twice.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from redis.asyncio import Redis

from seckill.keys import idempotency_field
from tests.faults.figures import burst, buy, codes, measure, shoppers, wait_persisted, won_ids
from tests.faults.harness import Cluster, Stopwatch
from tests.support import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

SHOPPERS = 150
STOCK = 200


async def _remaining(redis: Redis, state: str) -> int:
    return int(str(await redis.hget(state, "remaining")))


async def test_response_lost_after_commit_then_retried(cluster: Cluster,
                                                       fault_db: asyncpg.Pool) -> None:
    await cluster.worker("orders")
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    redis = cluster.redis()
    sale = await api.create_sale(stock=STOCK)
    sale_id = sale["id"]
    keys = cluster.keys(sale_id)

    http = await cluster.proxy(door.url, 80)
    http.latency_s = 2.0  # each way: the answers are still on the wire when Redis has decided
    slow = await cluster.api(f"http://127.0.0.1:{http.port}")
    users = shoppers(SHOPPERS)

    async def decided_then_cut() -> None:
        async def all_decided() -> bool:
            return await redis.hlen(keys.idem) == SHOPPERS

        await wait_until(all_decided, timeout=30, what="Redis to decide every purchase")
        http.reset_connections()

    first, _ = await asyncio.gather(burst(slow, sale_id, users), decided_then_cut())
    # On a busy machine a few requests reach the proxy late and are answered before the cut.
    assert set(codes(first)) <= {"no_answer", "won"}, codes(first)
    lost = [a for a in first if a.status is None]
    assert len(lost) >= SHOPPERS // 2, codes(first)
    remaining = await _remaining(redis, keys.state)
    assert remaining == STOCK - SHOPPERS
    decided = {user: (await redis.hget(keys.idem, idempotency_field(user, f"k-{user}")))
               for user in users}

    clock = Stopwatch()
    retries = await burst(api, sale_id, [a.user for a in lost])  # straight, same keys
    replays = [await buy(api, sale_id, u, f"k-{u}") for u in users[:30]]  # and once more
    for attempt in [a for a in first if a.won] + retries + replays:
        assert attempt.won, attempt
        assert decided[attempt.user] == f"{attempt.order_id}:1", attempt
    assert await _remaining(redis, keys.state) == remaining, \
        "a retried key took another unit"
    attempts = first + retries + replays
    await wait_persisted(fault_db, won_ids(attempts), within_s=30)
    drain_s = clock.lap()

    figures = await measure("response lost after commit", api=api, db=fault_db, sale=sale,
                            attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            responses_lost=len(lost))
    figures.check()
    assert figures.wins == figures.persisted == SHOPPERS
    assert figures.stats["remaining"] == STOCK - SHOPPERS
