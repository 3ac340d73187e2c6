"""Reconcile's cheap check of a big sale: totals agree, or the sale is inspected user by user."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from seckill import reconcile as reconcile_module
from seckill.catalog import get_sale
from seckill.context import open_context
from seckill.keys import KeySpace
from seckill.reconcile import glance, reconcile
from seckill.settings import Settings
from tests.support import Api, unique


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
    assert report.consistent


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
