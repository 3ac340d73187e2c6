"""Payments racing their expiry, and expiry sweepers racing each other.

With `payment_timeout_s=1`, shoppers pay just before or just after `pay_by` while two
`seckill worker expiry` processes sweep: each order ends as exactly one of paid or expired,
the answer the shopper got agrees with it, and every expired unit comes back exactly once.
Two sweepers called at once from two contexts expire each order once.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

import workers.expiry
from seckill.context import open_context
from tests.faults.figures import burst, measure, shoppers, wait_persisted, won_ids
from tests.faults.harness import Cluster, Stopwatch
from tests.support import Api, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

JITTER_S = 0.4


async def _orders(db: asyncpg.Pool, sale_id: str) -> dict[str, asyncpg.Record]:
    rows = await db.fetch("SELECT order_id, user_id, status, pay_by, units_returned "
                          "FROM orders WHERE sale_id = $1", int(sale_id))
    return {r["order_id"]: r for r in rows}


async def _settled(db: asyncpg.Pool, sale_id: str) -> bool:
    """No order left awaiting payment, every expired one's units given back."""
    left = await db.fetchval(
        "SELECT count(*) FROM orders WHERE sale_id = $1 AND (status = 'created' "
        "OR (status = 'expired' AND NOT units_returned))", int(sale_id))
    return bool(left == 0)


async def _pay_at(api: Api, order: asyncpg.Record, at: float) -> tuple[str, int, Any]:
    """The shopper pays at `at` (a time chosen around pay_by: this is the race itself)."""
    await asyncio.sleep(max(0.0, at - datetime.now(UTC).timestamp()))
    status, body = await api.request("POST", f"/api/v1/orders/{order['order_id']}/pay",
                                     user=order["user_id"])
    return order["order_id"], status, body


async def test_payments_race_expiry_with_two_sweepers(cluster: Cluster,
                                                      fault_db: asyncpg.Pool) -> None:
    await cluster.worker("orders")
    await cluster.worker("expiry")
    await cluster.worker("expiry")
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    sale = await api.create_sale(stock=200, payment_timeout_s=1)
    sale_id = sale["id"]

    attempts = await burst(api, sale_id, shoppers(300))
    wins = won_ids(attempts)
    await wait_persisted(fault_db, wins, within_s=30)
    orders = await _orders(fault_db, sale_id)
    rng = random.Random(7)
    payments = await asyncio.gather(*(
        _pay_at(api, o, o["pay_by"].timestamp() + rng.uniform(-JITTER_S, JITTER_S))
        for o in orders.values()))

    clock = Stopwatch()
    await wait_until(lambda: _settled(fault_db, sale_id), timeout=30,
                     what="every order paid or expired, and expired units given back")
    drain_s = clock.lap()

    final = await _orders(fault_db, sale_id)
    answers: dict[str, int] = {}
    for order_id, status, body in payments:
        outcome = final[order_id]["status"]
        if status == 200:
            assert body["status"] == "paid" and outcome == "paid", (order_id, body, outcome)
        else:
            assert (status, body["error"]) == (409, "order_expired"), (order_id, status, body)
            assert outcome == "expired", (order_id, outcome)
        answers[str(status)] = answers.get(str(status), 0) + 1
    paid = sum(1 for r in final.values() if r["status"] == "paid")
    expired = sum(1 for r in final.values() if r["status"] == "expired")
    assert paid + expired == len(wins) == 200
    assert paid and expired, f"no race happened: {paid} paid, {expired} expired"

    released = await cluster.redis().scard(cluster.keys(sale_id).released)
    figures = await measure("payments racing expiry (2 sweepers)", api=api, db=fault_db,
                            sale=sale, attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s, paid=paid,
                            expired=expired, released=released, pay_answers=answers)
    figures.check()
    stats = figures.stats
    assert (stats["paid"], stats["expired"]) == (paid, expired)
    assert stats["remaining"] == 200 - paid, "each expired unit came back exactly once"
    assert stats["reserved"] == stats["orders_persisted"] == paid
    assert released == expired


async def test_two_sweepers_expire_each_order_once(cluster: Cluster, fault_db: asyncpg.Pool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    await cluster.worker("orders")
    door = await cluster.serve()
    api = await cluster.api(door)
    rabbit = await cluster.rabbit()
    sale = await api.create_sale(stock=150, payment_timeout_s=1)
    sale_id = sale["id"]
    attempts = await burst(api, sale_id, shoppers(150))
    wins = won_ids(attempts)
    await wait_persisted(fault_db, wins, within_s=30)

    async def all_due() -> bool:
        return bool(await fault_db.fetchval(
            "SELECT count(*) = 0 FROM orders WHERE sale_id = $1 AND pay_by > now()",
            int(sale_id)))

    await wait_until(all_due, timeout=30, what="every order past pay_by")
    monkeypatch.setattr(workers.expiry, "BATCH", 20)  # small passes: the sweepers interleave
    clock = Stopwatch()
    expired_by: list[int] = [0, 0]
    async with open_context(cluster.settings) as one, open_context(cluster.settings) as two:
        while True:
            counts = await asyncio.gather(*(workers.expiry.sweep_once(ctx)
                                            for ctx in (one, two, one, two)))
            expired_by[0] += counts[0] + counts[2]
            expired_by[1] += counts[1] + counts[3]
            if not any(counts):
                break
    drain_s = clock.lap()

    released = await cluster.redis().scard(cluster.keys(sale_id).released)
    figures = await measure("two expiry sweepers at once", api=api, db=fault_db, sale=sale,
                            attempts=attempts, redelivered="n/a",
                            dead_lettered=await rabbit.dead(), drain_s=drain_s,
                            expired_by_sweeper=expired_by, released=released)
    figures.check()
    assert sum(expired_by) == len(wins) == 150, "each order expired once, by one sweeper"
    assert released == 150
    assert figures.stats["expired"] == 150
    assert figures.stats["remaining"] == 150, "every unit back exactly once"
    assert figures.stats["reserved"] == 0
