"""Poison in the order queue: dead-lettered, and the orders around it keep flowing.

Garbage published straight to `<prefix>.orders` (routing key `order.won`) while a sale runs:
bytes that are not JSON, JSON of the wrong shape, and a batch whose orders can never be
stored (one malformed, one for a sale that does not exist: PostgreSQL refuses it). Each ends
in `<prefix>.orders.dead`; every real win is persisted.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest
from ulid import ULID

from tests.faults.figures import burst, measure, shoppers, wait_persisted, won_ids
from tests.faults.harness import Cluster, Stopwatch
from tests.support import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

NO_SUCH_SALE = 999_999_999


def _order_of_unknown_sale() -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({
        "order_id": f"{ULID()}-{NO_SUCH_SALE}", "sale_id": str(NO_SUCH_SALE),
        "user_id": "ghost", "quantity": 1, "amount_cents": 100, "created_ms": now,
        "pay_by_ms": now + 60_000, "idempotency_key": ""}).encode()


POISON = [
    b"\x00\xffnot json at all{",
    b'{"hello": "world"}',
    b"[" + _order_of_unknown_sale() + b', {"order_id": 42}]',
]
DEAD_MESSAGES = 4  # two whole messages, and the two orders of the batch one by one


async def test_poison_messages_are_dead_lettered_and_orders_keep_flowing(
        cluster: Cluster, fault_db: asyncpg.Pool) -> None:
    await cluster.worker("orders")
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    sale = await api.create_sale(stock=500)

    first, _ = await asyncio.gather(burst(api, sale["id"], shoppers(300)),
                                    rabbit.publish(*POISON))
    clock = Stopwatch()

    async def all_dead() -> bool:
        return await rabbit.dead() >= DEAD_MESSAGES

    await wait_until(all_dead, timeout=30, what=f"{DEAD_MESSAGES} dead-lettered messages")
    second = await burst(api, sale["id"], shoppers(300))  # the worker is still consuming
    attempts = first + second
    await wait_persisted(fault_db, won_ids(attempts), within_s=30)
    drain_s = clock.lap()

    async def queue_empty() -> bool:
        return await rabbit.ready() == 0

    await wait_until(queue_empty, timeout=30, what="the order queue to empty")
    assert await fault_db.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1",
                                   NO_SUCH_SALE) == 0
    figures = await measure("poison messages", api=api, db=fault_db, sale=sale,
                            attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            poison_published=len(POISON))
    figures.check()
    assert figures.wins == figures.persisted == 500
    assert figures.dead_lettered == DEAD_MESSAGES
