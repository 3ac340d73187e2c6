"""Reconcile's cheap check of a big sale: totals agree, or the sale is inspected user by user."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from seckill import reconcile as reconcile_module
from seckill.catalog import Sale, get_sale
from seckill.context import WorkerContext, open_context
from seckill.keys import KeySpace, SaleKeys
from seckill.reconcile import Report, glance, queue_ready, reconcile
from seckill.schemas import from_ms
from seckill.scripts import Tally
from seckill.settings import Settings
from tests.support import Api, make_pending, unique, wait_until
from workers.reconcile import FullChecks, reconcile_all


@pytest.fixture(autouse=True)
def every_sale_is_big(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sale of more than two holders gets the glance (in production: 10,000)."""
    monkeypatch.setattr(reconcile_module, "GLANCE_ABOVE_HOLDERS", 2)


async def _sale_with_buyers(api: Api, buyers: int, stock: int = 10) -> tuple[dict[str, Any],
                                                                            list[dict[str, Any]]]:
    sale = await api.create_sale(stock=stock)
    orders = []
    for _ in range(buyers):
        user = unique("glance")
        status, order = await api.purchase(sale["id"], user)
        assert status == 202, order
        orders.append({**order, "user": user})
    await api.wait_persisted(sale["id"], buyers)
    return sale, orders


@asynccontextmanager
async def _glancing(settings: Settings, sale: dict[str, Any]
                    ) -> AsyncIterator[tuple[WorkerContext, Sale]]:
    async with open_context(settings) as ctx:
        found = await get_sale(ctx.db, int(sale["id"]))
        assert found is not None
        yield ctx, found


def _keys(settings: Settings, sale: dict[str, Any]) -> SaleKeys:
    return KeySpace(settings.redis_prefix).sale(int(sale["id"]))


async def _glance_with(monkeypatch: pytest.MonkeyPatch, settings: Settings,
                       sale: dict[str, Any], meanwhile: Callable[[Tally], Awaitable[None]]
                       ) -> Report | None:
    """The glance, with something happening between its Redis tally and its PostgreSQL
    reads."""
    async with _glancing(settings, sale) as (ctx, found):
        tally = ctx.scripts.tally

        async def tally_then(keys: SaleKeys) -> Tally:
            seen = await tally(keys)
            await meanwhile(seen)
            return seen

        monkeypatch.setattr(ctx.scripts, "tally", tally_then)
        return await glance(ctx, found)


async def _lose_a_unit(redis: Redis, keys: SaleKeys, user: str) -> None:
    """Redis forgets one unit a user holds: it goes back on sale (orders say 1 more held)."""
    await redis.hdel(keys.holders, user)
    await redis.hincrby(keys.state, "remaining", 1)


async def test_a_consistent_big_sale_passes_the_glance(api: Api, settings: Settings) -> None:
    sale, orders = await _sale_with_buyers(api, 4)
    status, _ = await api.request("POST", f"/api/v1/orders/{orders[0]['order_id']}/cancel",
                                  user=orders[0]["user"])
    assert status == 200

    async with open_context(settings) as ctx:
        found = await get_sale(ctx.db, int(sale["id"]))
        assert found is not None
        report = await glance(ctx, found)
        assert report is not None, "a consistent sale was sent to the full inspection"
        assert (report.held_in_redis, report.held_expected, report.remaining) == (3, 3, 7)
        assert report.consistent and report.glanced
        worker_view = await reconcile(ctx, int(sale["id"]), repair=True, glance_first=True)
        operator_view = await reconcile(ctx, int(sale["id"]), repair=False)
    assert worker_view.glanced and worker_view.consistent and not worker_view.repaired
    assert not operator_view.glanced and operator_view.consistent
    assert "glanced" not in operator_view.to_json()  # `seckill reconcile` prints as before


async def test_a_small_sale_is_always_inspected(api: Api, settings: Settings) -> None:
    sale, _ = await _sale_with_buyers(api, 2)
    async with open_context(settings) as ctx:
        found = await get_sale(ctx.db, int(sale["id"]))
        assert found is not None
        assert await glance(ctx, found) is None


async def test_units_redis_holds_beyond_the_orders_are_found_and_repaired(
        api: Api, settings: Settings, redis: Redis) -> None:
    sale, orders = await _sale_with_buyers(api, 3)
    keys = KeySpace(settings.redis_prefix).sale(int(sale["id"]))
    drifted = orders[1]["user"]
    await redis.hincrby(keys.holders, drifted, 1)  # a unit held without any order
    await redis.hincrby(keys.state, "remaining", -1)

    async with open_context(settings) as ctx:
        found = await get_sale(ctx.db, int(sale["id"]))
        assert found is not None
        assert await glance(ctx, found) is None
        report = await reconcile(ctx, int(sale["id"]), repair=True, glance_first=True)
    assert report.consistent, report.problems
    assert report.repaired and "corrected holdings of 1 users" in report.repaired[0]
    assert await redis.hget(keys.holders, drifted) == "1"
    assert (await api.stats(sale["id"]))["remaining"] == 7


async def test_a_win_in_flight_is_counted_once_pending_and_once_stored(
        api: Api, settings: Settings, redis: Redis) -> None:
    sale, orders = await _sale_with_buyers(api, 3)
    await make_pending(redis, settings, sale["id"], unique("inflight"))  # not in PostgreSQL
    keys = _keys(settings, sale)
    stored = orders[0]["order_id"]  # a stored order's record left behind in Redis
    await redis.hset(keys.orders, stored, json.dumps(
        {"order_id": stored, "user_id": orders[0]["user"], "quantity": 1,
         "created_ms": int(time.time() * 1000)}))
    try:
        async with _glancing(settings, sale) as (ctx, found):
            report = await glance(ctx, found)
        assert report is not None
        assert (report.held_in_redis, report.held_expected, report.pending_in_redis) == (4, 4, 2)
    finally:
        await redis.hdel(keys.orders, stored)


async def test_doubt_sends_the_sale_to_the_full_inspection(
        api: Api, settings: Settings, redis: Redis, db: asyncpg.Pool) -> None:
    # A closed order whose units PostgreSQL does not know to be back.
    sale, orders = await _sale_with_buyers(api, 4)
    status, _ = await api.request("POST", f"/api/v1/orders/{orders[0]['order_id']}/cancel",
                                  user=orders[0]["user"])
    assert status == 200
    await db.execute("UPDATE orders SET units_returned = false WHERE order_id = $1",
                     orders[0]["order_id"])
    async with _glancing(settings, sale) as (ctx, found):
        assert await glance(ctx, found) is None

    # A win 20 s old that is neither stored nor in the outbox, with the queue empty: lost.
    sale, _ = await _sale_with_buyers(api, 3)
    keys = _keys(settings, sale)
    lost = await make_pending(redis, settings, sale["id"], unique("lost"))
    record = json.loads(await redis.hget(keys.orders, lost) or "{}")
    record["created_ms"] = int(time.time() * 1000) - 20_000
    await redis.hset(keys.orders, lost, json.dumps(record))
    async with _glancing(settings, sale) as (ctx, found):
        await wait_until(lambda: _queue_empty(ctx), what="an empty order queue")
        assert await glance(ctx, found) is None


async def _queue_empty(ctx: WorkerContext) -> bool:
    return await queue_ready(ctx) == 0


async def test_a_cancel_between_the_reads_cannot_hide_a_lost_unit(
        api: Api, settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis lost a unit; a cancel completes after the tally, so PostgreSQL's count falls by
    the same unit: the totals would agree, but the give-back is seen and is doubt."""
    sale, orders = await _sale_with_buyers(api, 4)
    keys = _keys(settings, sale)
    await _lose_a_unit(redis, keys, orders[1]["user"])

    async def cancel(_: Tally) -> None:
        status, _ = await api.request(
            "POST", f"/api/v1/orders/{orders[2]['order_id']}/cancel", user=orders[2]["user"])
        assert status == 200

    assert await _glance_with(monkeypatch, settings, sale, cancel) is None


async def test_an_order_of_the_tallys_millisecond_cannot_hide_a_lost_unit(
        api: Api, settings: Settings, redis: Redis, db: asyncpg.Pool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An order won within the tally's millisecond is left out of PostgreSQL's count (it
    may be after the tally): with a unit lost in Redis the totals would agree."""
    sale, orders = await _sale_with_buyers(api, 4)
    keys = _keys(settings, sale)
    await _lose_a_unit(redis, keys, orders[1]["user"])

    async def same_millisecond(tally: Tally) -> None:
        await db.execute("UPDATE orders SET created_at = $2 WHERE order_id = $1",
                         orders[3]["order_id"], from_ms(tally.now_ms))

    assert await _glance_with(monkeypatch, settings, sale, same_millisecond) is None


async def test_a_pending_win_of_the_tallys_millisecond_stored_meanwhile_counts_once(
        api: Api, settings: Settings, redis: Redis, db: asyncpg.Pool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tally saw the win pending, so it was won before the tally: stored in the same
    millisecond right after, it counts (once), and is no doubt."""
    sale, _ = await _sale_with_buyers(api, 3)
    user = unique("inflight")
    order_id = await make_pending(redis, settings, sale["id"], user)

    async def stored_meanwhile(tally: Tally) -> None:
        await db.execute(
            "INSERT INTO orders (order_id, sale_id, user_id, quantity, amount_cents,"
            " created_at, pay_by) VALUES ($1, $2, $3, 1, 100, $4, $5)",
            order_id, int(sale["id"]), user, from_ms(tally.now_ms),
            from_ms(tally.now_ms + 3_600_000))

    report = await _glance_with(monkeypatch, settings, sale, stored_meanwhile)
    assert report is not None, "a win the tally saw pending was taken for doubt"
    assert (report.held_in_redis, report.held_expected) == (4, 4)


class RecordedChecks(FullChecks):
    def __init__(self) -> None:
        super().__init__(every_s=600)
        self.inspected_sales: list[int] = []

    def inspected(self, sale_id: int, now: float) -> None:
        self.inspected_sales.append(sale_id)
        super().inspected(sale_id, now)


async def test_the_worker_glances_at_big_sales_and_inspects_the_others(
        api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    big, _ = await _sale_with_buyers(api, 3)
    small, _ = await _sale_with_buyers(api, 1)
    checks = RecordedChecks()
    async with open_context(settings) as ctx:
        await reconcile_all(ctx, checks=checks)
        assert int(small["id"]) in checks.inspected_sales
        assert int(big["id"]) not in checks.inspected_sales  # its full one is 600 s away

        # Once due, the big sale is inspected in full although its glance would pass.
        monkeypatch.setattr(checks, "may_glance", lambda sale_id, now: False)
        await reconcile_all(ctx, checks=checks)
    assert int(big["id"]) in checks.inspected_sales
